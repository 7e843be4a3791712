//! Kafka client factories. Every non-obvious librdkafka key carries a comment saying why it
//! has that value. Only standard Kafka behaviour is relied on (consumer groups, the
//! idempotent producer), so the same code runs on the local broker, compose and a cluster.
//!
//! One room: every client's librdkafka settings side by side, so that a key set for one client
//! is read against the others.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::AdminClient;
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;
use tokio_util::sync::CancellationToken;

use crate::config::{GroupProtocol, KafkaSettings};

/// The settings every client shares: where the brokers are, how it reconnects, who it is.
pub fn client_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        // Find out quickly that a broker is gone, and come back quickly when it returns.
        .set("socket.connection.setup.timeout.ms", "5000")
        .set("reconnect.backoff.max.ms", "2000")
        // A broker that stops answering without closing its connections (hung, paused,
        // partitioned) keeps requests waiting this long (librdkafka's default: 60 s) before
        // they are retried elsewhere, e.g. at a partition's new leader.
        .set("socket.timeout.ms", settings.request_timeout_ms.to_string());
    if !settings.username.is_empty() {
        // Every client says who it is; the broker's ACLs for that principal decide what it
        // may read and write (decision 0028).
        config
            .set("security.protocol", if settings.tls { "sasl_ssl" } else { "sasl_plaintext" })
            .set("sasl.mechanisms", "SCRAM-SHA-512")
            .set("sasl.username", &settings.username)
            .set("sasl.password", settings.password.expose());
    } else if settings.tls {
        config.set("security.protocol", "ssl");
    }
    if settings.tls && !settings.ca_file.is_empty() {
        config.set("ssl.ca.location", &settings.ca_file);
    }
    if !settings.debug.is_empty() {
        config.set("debug", &settings.debug).set_log_level(rdkafka::config::RDKafkaLogLevel::Debug);
    }
    config
}

/// The producer the relay (and the dead-letter queue) publishes with.
pub fn producer(settings: &KafkaSettings) -> KafkaResult<FutureProducer> {
    client_config(settings)
        // The broker deduplicates the producer's own retries and keeps per-partition order
        // with up to 5 requests in flight, so a retried batch can neither duplicate nor
        // reorder the events of one order.
        .set("enable.idempotence", "true")
        // A message counts as sent only once every in-sync replica has it (with
        // min.insync.replicas=2 on a cluster: at least two copies).
        .set("acks", "all")
        .set("linger.ms", settings.linger_ms.to_string())
        // Give up on a message after this long; the relay keeps the outbox row and retries.
        .set("message.timeout.ms", settings.message_timeout_ms.to_string())
        // Events are small JSON documents and the machines have few cores: no compression.
        .set("compression.type", "none")
        // Bounded memory in a small pod (see KafkaSettings::producer_buffer_kbytes).
        .set("queue.buffering.max.kbytes", settings.producer_buffer_kbytes.to_string())
        .create()
}

/// A consumer in `group_id` that stores offsets only when told to (after the database
/// transaction that handled the message committed) and commits stored offsets in the
/// background. Its context records the partitions the group gave it.
pub fn consumer(settings: &KafkaSettings, group_id: &str) -> KafkaResult<GroupConsumer> {
    consumer_config(settings, group_id).create_with_context(GroupContext::default())
}

/// What [`consumer`] makes its client with.
fn consumer_config(settings: &KafkaSettings, group_id: &str) -> ClientConfig {
    let mut config = client_config(settings);
    // Never a third of the session or more: the group must hear from a member several times
    // before it gives up on it.
    let heartbeat_ms = settings.heartbeat_interval_ms.min(settings.session_timeout_ms / 3).max(1);
    if !settings.instance_id.is_empty() {
        config.set("group.instance.id", &settings.instance_id);
    }
    config
        .set("group.id", group_id)
        // Commit in the background, but only offsets we stored explicitly...
        .set("enable.auto.commit", "true")
        // ...as often as the consumer heartbeats. librdkafka's group client checks whether a
        // heartbeat is due only when its main thread wakes, and an idle consumer's main thread
        // wakes on its next timer, this one: with a 1 s commit interval the heartbeats went out
        // about once a second whatever their interval, and a partition handed over waited for
        // them (decision 0027). A commit with no new offsets sends nothing.
        .set("auto.commit.interval.ms", heartbeat_ms.to_string())
        // ...and we store an offset only after the message's transaction committed.
        .set("enable.auto.offset.store", "false")
        // A new group starts from the beginning: no event published before it joined is lost.
        .set("auto.offset.reset", "earliest")
        // See KafkaSettings::fetch_wait_max_ms.
        .set("fetch.wait.max.ms", settings.fetch_wait_max_ms.to_string())
        // Notice a topic created after the consumer started (e.g. broker up after the service).
        .set("topic.metadata.refresh.interval.ms", "5000");
    bound_prefetch(&mut config, settings);
    match settings.group_protocol {
        GroupProtocol::Classic => config
            .set("session.timeout.ms", settings.session_timeout_ms.to_string())
            // A partition whose owner left waits for the next heartbeat of the member that
            // takes it over (decision 0027).
            .set("heartbeat.interval.ms", heartbeat_ms.to_string())
            // Incremental rebalancing: when an instance joins or leaves, only the partitions
            // that move are revoked; the others keep flowing (and keep their events in hand).
            .set("partition.assignment.strategy", "cooperative-sticky"),
        // The broker assigns (incrementally too) and sets the session and heartbeat times.
        GroupProtocol::Consumer => config.set("group.protocol", "consumer"),
    };
    config
}

/// A consumer made by [`consumer`].
pub type GroupConsumer = StreamConsumer<GroupContext>;

/// A consumer outside any group's assignment, for reading chosen partitions from chosen
/// offsets (a replay): it never commits, so the group's position is untouched.
pub fn reader(settings: &KafkaSettings, group_id: &str) -> KafkaResult<StreamConsumer> {
    let mut config = client_config(settings);
    config
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.wait.max.ms", settings.fetch_wait_max_ms.to_string());
    bound_prefetch(&mut config, settings);
    config.create()
}

/// Bounds what a consumer holds fetched but not yet handled (librdkafka's defaults: 64 MiB
/// queued, 50 MB per fetch, 100 MB per response), so that a 128 MiB pod never runs out
/// behind a long backlog: KafkaSettings::consumer_prefetch_kbytes queued, and fetches of at
/// most as much (never less than one largest message).
fn bound_prefetch(config: &mut ClientConfig, settings: &KafkaSettings) {
    const LARGEST_MESSAGE: u32 = 1024 * 1024 + 12; // the broker's message.max.bytes
    let fetch = (settings.consumer_prefetch_kbytes.saturating_mul(1024)).max(LARGEST_MESSAGE);
    config
        .set("queued.max.messages.kbytes", settings.consumer_prefetch_kbytes.max(1).to_string())
        .set("fetch.max.bytes", fetch.to_string())
        .set("receive.message.max.bytes", (fetch + 512).to_string());
}

/// Keeps the partitions the consumer group assigned to this instance, for `/health`, and logs
/// every change.
/// While an operator has paused the consumer, partitions the group assigns are paused too.
/// Before partitions are taken away, the owner's [`BeforeRevoke`] runs, if it set one.
#[derive(Default)]
pub struct GroupContext {
    assigned: Mutex<Vec<(String, i32)>>,
    paused: AtomicBool,
    before_revoke: Mutex<Option<BeforeRevoke>>,
}

/// What a consumer does with partitions the group is taking from it, before they go (and
/// before librdkafka commits their stored offsets): e.g. finish the events it holds of them.
/// It runs on the thread that polls the consumer, and the partitions have no owner until it
/// returns: it must be bounded.
pub type BeforeRevoke = Arc<dyn Fn(&[(String, i32)]) + Send + Sync>;

impl GroupContext {
    /// The partitions this instance consumes now, as `(topic, partition)`, sorted.
    pub fn assigned(&self) -> Vec<(String, i32)> {
        self.assigned.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Whether an operator paused the consumer.
    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Sets what runs before partitions are taken away (replacing what was set).
    pub fn before_revoke(&self, hook: BeforeRevoke) {
        *self.before_revoke.lock().unwrap_or_else(PoisonError::into_inner) = Some(hook);
    }

    /// Pauses (or resumes) every partition `consumer` holds now, and those assigned later.
    pub fn set_paused<C: rdkafka::consumer::Consumer<Self>>(&self, consumer: &C, paused: bool) -> KafkaResult<()> {
        self.paused.store(paused, Ordering::SeqCst);
        let assignment = consumer.assignment()?;
        if paused { consumer.pause(&assignment) } else { consumer.resume(&assignment) }
    }
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(list) = rebalance else { return };
        let hook = self.before_revoke.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(hook) = hook {
            let revoked: Vec<(String, i32)> =
                list.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect();
            hook(&revoked);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // The assignment is kept from the rebalance's own lists (partitions added, partitions
        // taken away: both the eager and the cooperative protocol say so), never asked of the
        // consumer here: while a consumer is being dropped, librdkafka runs this callback from
        // its close and `assignment()` would wait forever on a queue nobody serves.
        let (change, list) = match rebalance {
            Rebalance::Assign(list) => ("assigned", *list),
            Rebalance::Revoke(list) => ("revoked", *list),
            Rebalance::Error(error) => {
                tracing::warn!(%error, "consumer group rebalance failed");
                return;
            }
        };
        let changed: Vec<(String, i32)> =
            list.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect();
        let now = {
            let mut assigned = self.assigned.lock().unwrap_or_else(PoisonError::into_inner);
            assigned.retain(|p| !changed.contains(p));
            if matches!(rebalance, Rebalance::Assign(_)) {
                assigned.extend(changed.iter().cloned());
            }
            assigned.sort();
            assigned.len()
        };
        // Which partitions moved, by name (at most the topics' partition count): the
        // scale-storm drill reads these lines to find how long a partition had no owner.
        let moved =
            changed.iter().map(|(topic, partition)| format!("{topic}/{partition}")).collect::<Vec<_>>().join(",");
        tracing::info!(change, partitions = changed.len(), moved, now, "consumer group rebalanced");
        if let Rebalance::Assign(list) = rebalance
            && self.paused()
            && let Err(error) = consumer.pause(list)
        {
            tracing::error!(%error, "cannot pause the partitions just assigned");
        }
    }
}

/// An admin client, for creating topics.
pub fn admin(settings: &KafkaSettings) -> KafkaResult<AdminClient<DefaultClientContext>> {
    client_config(settings).create()
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

/// A long-lived client for health checks: asks the broker for one topic's metadata.
pub struct BrokerProbe {
    client: Arc<BaseConsumer>,
    /// The topic whose metadata is asked for; `None`: the cluster's.
    topic: Option<String>,
    brokers: String,
    /// Its latest health check (`crate::health::broker`).
    pub(crate) recent: crate::health::RecentChecks,
}

impl BrokerProbe {
    pub fn new(settings: &KafkaSettings, topic: Option<&str>) -> KafkaResult<Self> {
        Ok(Self {
            client: Arc::new(client_config(settings).create()?),
            topic: topic.map(str::to_owned),
            brokers: settings.brokers.clone(),
            recent: crate::health::RecentChecks::default(),
        })
    }

    /// `Ok` when a broker answered within `timeout`; otherwise what went wrong, in words.
    pub async fn check(&self, timeout: Duration) -> Result<(), String> {
        self.brokers(timeout).await.map(drop)
    }

    /// How many brokers the cluster has, as the answering broker sees it.
    pub async fn brokers(&self, timeout: Duration) -> Result<usize, String> {
        let (client, topic) = (Arc::clone(&self.client), self.topic.clone());
        let answered = tokio::task::spawn_blocking(move || {
            client.fetch_metadata(topic.as_deref(), timeout).map(|metadata| metadata.brokers().len())
        })
        .await;
        match answered {
            Ok(Ok(brokers)) => Ok(brokers),
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

#[cfg(test)]
mod tests {
    use super::consumer_config;
    use crate::config::KafkaSettings;

    #[test]
    fn a_consumer_fetches_ahead_a_few_mebibytes_not_librdkafkas_64() {
        let config = consumer_config(&KafkaSettings::default(), "g");
        assert_eq!(config.get("queued.max.messages.kbytes"), Some("4096"));
        assert_eq!(config.get("fetch.max.bytes"), Some("4194304"));
        assert_eq!(config.get("receive.message.max.bytes"), Some("4194816"));
        let tiny = consumer_config(&KafkaSettings { consumer_prefetch_kbytes: 1, ..KafkaSettings::default() }, "g");
        assert_eq!(tiny.get("fetch.max.bytes"), Some("1048588"), "never below one largest message");
    }
}
