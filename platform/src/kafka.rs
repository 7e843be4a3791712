//! Kafka client factories. Every non-obvious librdkafka key carries a comment saying why it
//! has that value; the same settings work on Apache Kafka and on the local tansu broker.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::config::{Assignment, KafkaSettings};

fn base(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        // Find out quickly that a broker is gone, and come back quickly when it returns.
        .set("socket.connection.setup.timeout.ms", "5000")
        .set("reconnect.backoff.max.ms", "2000");
    if !settings.debug.is_empty() {
        config.set("debug", &settings.debug).set_log_level(rdkafka::config::RDKafkaLogLevel::Debug);
    }
    config
}

/// The producer the relay publishes with.
pub fn producer(settings: &KafkaSettings) -> KafkaResult<FutureProducer> {
    let mut config = base(settings);
    if settings.idempotence {
        // The broker deduplicates the producer's own retries and keeps per-partition order,
        // so a retried batch can neither duplicate nor reorder events of one order.
        config.set("enable.idempotence", "true");
    } else {
        // Without idempotence, one request in flight keeps a retry from overtaking the
        // messages after it; a retry may duplicate, which consumers recognise.
        config.set("enable.idempotence", "false").set("max.in.flight.requests.per.connection", "1");
    }
    config
        // A message counts as sent only once every in-sync replica has it.
        .set("acks", "all")
        .set("linger.ms", settings.linger_ms.to_string())
        // Give up on a message after this long; the relay keeps the outbox row and retries.
        .set("message.timeout.ms", settings.message_timeout_ms.to_string())
        // tansu does not support snappy; lz4 is supported everywhere but costs CPU we lack.
        .set("compression.type", "none")
        .create()
}

/// A consumer in `group_id` that stores offsets only when told to (after the database
/// transaction that handled the message committed) and commits stored offsets in the
/// background.
pub fn consumer(settings: &KafkaSettings, group_id: &str) -> KafkaResult<StreamConsumer> {
    base(settings)
        .set("group.id", group_id)
        // Commit in the background, but only offsets we stored explicitly...
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        // ...and we store an offset only after the message's transaction committed.
        .set("enable.auto.offset.store", "false")
        // A new group starts from the beginning: no event published before it joined is lost.
        .set("auto.offset.reset", "earliest")
        // See KafkaSettings::fetch_wait_max_ms: bounds the latency of one hop.
        .set("fetch.wait.max.ms", settings.fetch_wait_max_ms.to_string())
        .set("session.timeout.ms", settings.session_timeout_ms.to_string())
        .set("heartbeat.interval.ms", (settings.session_timeout_ms / 5).max(500).to_string())
        // The assignor verified on both Apache Kafka and tansu.
        .set("partition.assignment.strategy", "range")
        // Notice a topic created after the consumer started (e.g. broker up after the service).
        .set("topic.metadata.refresh.interval.ms", "5000")
        .create()
}

/// An admin client, for creating topics.
pub fn admin(settings: &KafkaSettings) -> KafkaResult<AdminClient<DefaultClientContext>> {
    base(settings).create()
}

/// Waits until a broker answers. `None` means shutdown came first.
pub async fn wait_until_reachable(settings: &KafkaSettings, shutdown: &CancellationToken) -> Option<()> {
    let probe = match BrokerProbe::new(settings, None) {
        Ok(probe) => probe,
        Err(error) => {
            tracing::error!(%error, "cannot create a Kafka client");
            return None;
        }
    };
    crate::retry::until_ready(&format!("kafka at {}", settings.brokers), shutdown, || {
        probe.check(Duration::from_secs(2))
    })
    .await
}

/// Starts consuming `topics` the way `settings.assignment` says. With [`Assignment::All`] it
/// needs the topics' metadata, so it retries (logging each attempt) until the broker answers
/// and the topics exist. `None` means shutdown came first.
pub async fn start_consuming(
    consumer: &StreamConsumer,
    settings: &KafkaSettings,
    topics: &[&str],
    shutdown: &CancellationToken,
) -> Option<()> {
    match settings.assignment {
        Assignment::Group => match consumer.subscribe(topics) {
            Ok(()) => Some(()),
            Err(error) => {
                tracing::error!(%error, "cannot subscribe");
                None
            }
        },
        Assignment::All => {
            crate::retry::until_ready("kafka topic metadata", shutdown, || async { assign_all(consumer, topics) }).await
        }
    }
}

fn assign_all(consumer: &StreamConsumer, topics: &[&str]) -> Result<(), String> {
    let mut assignment = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(2)).map_err(|e| e.to_string())?;
        let partitions = metadata.topics().first().map(|t| t.partitions().len()).unwrap_or(0);
        if partitions == 0 {
            return Err(format!("topic {topic} does not exist yet"));
        }
        for partition in 0..partitions as i32 {
            // Resume where the group committed last (or per auto.offset.reset).
            assignment.add_partition_offset(topic, partition, Offset::Stored).map_err(|e| e.to_string())?;
        }
    }
    consumer.assign(&assignment).map_err(|e| e.to_string())?;
    tracing::info!(partitions = assignment.count(), "consuming every partition (assignment = all)");
    Ok(())
}

/// A long-lived client for health checks: asks the broker for one topic's metadata.
pub struct BrokerProbe {
    client: Arc<BaseConsumer>,
    /// The topic whose metadata is asked for; `None`: the cluster's.
    topic: Option<String>,
    brokers: String,
}

impl BrokerProbe {
    pub fn new(settings: &KafkaSettings, topic: Option<&str>) -> KafkaResult<Self> {
        Ok(Self {
            client: Arc::new(base(settings).create()?),
            topic: topic.map(str::to_owned),
            brokers: settings.brokers.clone(),
        })
    }

    /// `Ok` when a broker answered within `timeout`; otherwise what went wrong, in words.
    pub async fn check(&self, timeout: Duration) -> Result<(), String> {
        let (client, topic) = (Arc::clone(&self.client), self.topic.clone());
        let answered =
            tokio::task::spawn_blocking(move || client.fetch_metadata(topic.as_deref(), timeout).map(drop)).await;
        match answered {
            Ok(Ok(())) => Ok(()),
            Ok(Err(rdkafka::error::KafkaError::MetadataFetch(code))) => Err(match code {
                RDKafkaErrorCode::OperationTimedOut => {
                    format!("metadata request timed out after {}s", timeout.as_secs())
                }
                RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown => {
                    format!("no broker reachable at {}", self.brokers)
                }
                other => format!("metadata request failed: {other}"),
            }),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("the check was interrupted".to_owned()),
        }
    }
}
