//! Rule 3 of decision 0030, on a real primary and synchronous standby: a consumer stores an
//! event's offset only once the standby holds the transaction that applied it. The failover
//! manager has switched synchronous replication off (the standby is down), so the consumer's
//! commit returns without the standby; the event is applied on the primary, but the group's
//! committed offset stays before it — a failover now would take the effect back, and the
//! event would be delivered again rather than lost. Once the standby is back and synchronous,
//! the offset moves past it.

use std::time::Duration;

use async_trait::async_trait;
use diesel_async::{AsyncPgConnection, RunQueryDsl as _};
use e2e::replicated::ReplicatedPostgres;
use e2e::{TestSystem, kafka};
use messaging::inbox::{Committed, HandleError, Handler, InboxConsumer};
use messaging::settings::InboxSettings;
use platform::standby::StandbyWait;
use rdkafka::consumer::Consumer as _;
use rdkafka::{Offset, TopicPartitionList};
use schema::RawEnvelope;
use schema::envelope::{Envelope, Trace};
use schema::events::OrderCancelled;
use tokio_util::sync::CancellationToken;

/// Applies nothing but its inbox row: that row is the effect a failover could take back.
struct InboxOnly;

#[async_trait]
impl Handler for InboxOnly {
    async fn handle(&self, _conn: &mut AsyncPgConnection, _event: &RawEnvelope) -> Result<Committed, HandleError> {
        Ok(Committed::nothing())
    }
}

/// The offsets group `group` has committed on `topic`, summed over its partitions (none yet:
/// 0): the number of events the group has finished, whichever partitions they went to.
fn committed(kafka: &platform::config::KafkaSettings, group: &str, topic: &str) -> i64 {
    let reader = platform::kafka::reader(kafka, group).expect("reader");
    let metadata = reader.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
    let mut partitions = TopicPartitionList::new();
    for partition in metadata.topics()[0].partitions() {
        partitions.add_partition(topic, partition.id());
    }
    let committed = reader.committed_offsets(partitions, Duration::from_secs(10)).expect("committed offsets");
    committed
        .elements()
        .iter()
        .map(|element| match element.offset() {
            Offset::Offset(offset) => offset,
            _ => 0,
        })
        .sum()
}

/// Waits up to `within` for the committed offset to reach `offset`; returns the last seen.
async fn committed_reaches(
    kafka: &platform::config::KafkaSettings,
    group: &str,
    topic: &str,
    offset: i64,
    within: Duration,
) -> i64 {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let seen = committed(kafka, group, topic);
        if seen >= offset || tokio::time::Instant::now() >= deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Rows of the inbox, on the primary.
async fn applied(url: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = TestSystem::connect(url).await;
    diesel::sql_query("SELECT count(*) AS n FROM inbox_log").get_result::<Count>(&mut conn).await.expect("count").n
}

/// An event of an order of its own, keyed by it as the relay does: the consumer may work on it
/// while another order's event is unfinished.
async fn publish_event(producer: &rdkafka::producer::FutureProducer, topic: &str) {
    let order_id = schema::ids::OrderId::new();
    let envelope = Envelope::new(
        OrderCancelled { order_id },
        &Trace { correlation_id: "standby-offsets".into(), traceparent: None },
    );
    kafka::publish_raw(producer, topic, &order_id.to_string(), &serde_json::to_vec(&envelope).expect("json")).await;
}

/// A consumer of a fresh topic on a fresh database of `postgres`, waiting up to `bound` for
/// its standby; what a test needs to drive and read it.
struct Consuming {
    url: String,
    kafka: platform::config::KafkaSettings,
    topic: String,
    group: String,
    producer: rdkafka::producer::FutureProducer,
    shutdown: CancellationToken,
    running: tokio::task::JoinHandle<Result<(), messaging::inbox::ConsumeError>>,
}

impl Consuming {
    async fn start(name: &str, postgres: &ReplicatedPostgres, bound: Duration) -> Self {
        let url = postgres.create_database(&format!("{name}_consumer"));
        platform::db::run_migrations(&url, vec![messaging::MIGRATIONS]).await.expect("migrations");
        let kafka = e2e::kafka_settings();
        let topic = format!("{name}.offsets");
        kafka::create_topics_with_dead_letters(&kafka, &[&topic]).await;
        let producer = platform::kafka::producer(&kafka).expect("producer");
        let group = format!("{name}-group");
        let pool = platform::db::pool(&platform::config::DatabaseSettings::at(&url)).expect("pool");
        let consumer = InboxConsumer::new(&kafka, &group, &[&topic], &InboxSettings::default(), pool, InboxOnly)
            .expect("consumer")
            .waiting_for(StandbyWait { standbys: 1, bound });
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(consumer.run(shutdown.clone()));
        Self { url, kafka, topic, group, producer, shutdown, running }
    }

    async fn committed_reaches(&self, offset: i64, within: Duration) -> i64 {
        committed_reaches(&self.kafka, &self.group, &self.topic, offset, within).await
    }

    /// Publishes one more event and waits up to `within` until the primary's inbox has `rows`
    /// rows, failing with `otherwise`.
    async fn publish_and_apply(&self, rows: i64, within: Duration, otherwise: &str) {
        publish_event(&self.producer, &self.topic).await;
        let deadline = tokio::time::Instant::now() + within;
        while applied(&self.url).await < rows {
            assert!(tokio::time::Instant::now() < deadline, "{otherwise}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.running.await.expect("consumer task").expect("consumer stops cleanly");
    }
}

/// A consumer waiting up to `bound` for the standby, whose first event was applied and its
/// offset committed with the standby synchronous; then the standby goes down and the manager
/// switches synchronous replication off: commits return at once, held by the primary alone.
async fn standby_lost_after_one_event(bound: Duration) -> (ReplicatedPostgres, Consuming) {
    e2e::init_telemetry();
    let (name, postgres) = ReplicatedPostgres::for_test().await;
    let consuming = Consuming::start(&name, &postgres, bound).await;
    publish_event(&consuming.producer, &consuming.topic).await;
    assert_eq!(consuming.committed_reaches(1, Duration::from_secs(30)).await, 1, "first event committed");
    postgres.stop_standby();
    postgres.set_synchronous(false);
    (postgres, consuming)
}

/// The standby comes back and is synchronous again.
fn standby_back(postgres: &ReplicatedPostgres) {
    postgres.start_standby();
    postgres.set_synchronous(true);
}

#[tokio::test]
async fn a_consumer_commits_an_offset_only_once_the_standby_holds_its_transaction() {
    let (postgres, consuming) = standby_lost_after_one_event(Duration::from_millis(300)).await;
    consuming.publish_and_apply(2, Duration::from_secs(20), "the second event was not applied on the primary").await;
    // Several commit intervals: the offset must not pass an effect only the primary has.
    assert_eq!(
        consuming.committed_reaches(2, Duration::from_secs(5)).await,
        1,
        "the offset moved past an event whose transaction the standby does not hold"
    );

    standby_back(&postgres);
    assert_eq!(consuming.committed_reaches(2, Duration::from_secs(30)).await, 2, "committed once held");
    consuming.stop().await;
}

/// The wait for the standby is off the consumer's path: while one batch waits, the next is
/// applied. (Waiting in line made the consumer's capacity the sum of its transaction and the
/// standby's round trip, which the inventory consumer could not afford at 100 orders/s.)
#[tokio::test]
async fn while_one_batch_waits_for_the_standby_the_next_is_applied() {
    // Long enough that a consumer waiting in line would not reach the next event in time.
    let (postgres, consuming) = standby_lost_after_one_event(Duration::from_secs(30)).await;
    consuming.publish_and_apply(2, Duration::from_secs(20), "the second event was not applied on the primary").await;
    consuming
        .publish_and_apply(3, Duration::from_secs(10), "the third event was not applied while the second waited")
        .await;
    assert_eq!(
        consuming.committed_reaches(2, Duration::from_secs(2)).await,
        1,
        "no offset passes what the standby lacks"
    );

    standby_back(&postgres);
    assert_eq!(consuming.committed_reaches(3, Duration::from_secs(30)).await, 3, "both committed once held");
    consuming.stop().await;
}
