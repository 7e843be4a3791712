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
/// 0); the test's events all go to one partition.
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

async fn publish_event(producer: &rdkafka::producer::FutureProducer, topic: &str) {
    let event = OrderCancelled { order_id: schema::ids::OrderId::new() };
    let envelope = Envelope::new(event, &Trace { correlation_id: "standby-offsets".into(), traceparent: None });
    kafka::publish_raw(producer, topic, "k", &serde_json::to_vec(&envelope).expect("json")).await;
}

#[tokio::test]
async fn a_consumer_commits_an_offset_only_once_the_standby_holds_its_transaction() {
    e2e::init_telemetry();
    let (name, postgres) = ReplicatedPostgres::for_test().await;
    let url = postgres.create_database(&format!("{name}_consumer"));
    platform::db::run_migrations(&url, vec![messaging::MIGRATIONS]).await.expect("migrations");
    let kafka = e2e::kafka_settings();
    let topic = format!("{name}.offsets");
    kafka::create_topics_with_dead_letters(&kafka, &[&topic]).await;
    let producer = platform::kafka::producer(&kafka).expect("producer");
    let group = format!("{name}-group");

    let standbys = StandbyWait { standbys: 1, bound: Duration::from_millis(300) };
    let pool = platform::db::pool(&platform::config::DatabaseSettings::at(&url)).expect("pool");
    let consumer = InboxConsumer::new(&kafka, &group, &[&topic], &InboxSettings::default(), pool, InboxOnly)
        .expect("consumer")
        .waiting_for(standbys);
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(consumer.run(shutdown.clone()));

    // With the standby synchronous, the event is applied and its offset committed.
    publish_event(&producer, &topic).await;
    assert_eq!(committed_reaches(&kafka, &group, &topic, 1, Duration::from_secs(30)).await, 1, "first event committed");

    // The standby goes down and the manager switches synchronous replication off: commits
    // return at once, held by the primary alone.
    postgres.stop_standby();
    postgres.set_synchronous(false);
    publish_event(&producer, &topic).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while applied(&url).await < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the second event was not applied on the primary");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Several commit intervals: the offset must not pass an effect only the primary has.
    assert_eq!(
        committed_reaches(&kafka, &group, &topic, 2, Duration::from_secs(5)).await,
        1,
        "the offset moved past an event whose transaction the standby does not hold"
    );

    // The standby comes back and is synchronous again: the offset goes on.
    postgres.start_standby();
    postgres.set_synchronous(true);
    assert_eq!(committed_reaches(&kafka, &group, &topic, 2, Duration::from_secs(30)).await, 2, "committed once held");

    shutdown.cancel();
    running.await.expect("consumer task").expect("consumer stops cleanly");
}
