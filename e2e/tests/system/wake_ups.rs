//! Writers of the outbox wake its relay only while the relay sleeps (`relay/src/wake.rs`,
//! messaging migration 000015): a write while no relay sleeps sends no `NOTIFY`; a relay with
//! a silent writer between insert and commit does not go to sleep, and publishes that row as
//! soon as it commits; a sleeping relay is woken by the next write. The relay's poll is set
//! to a minute, so a wake-up that went missing shows as a row left unpublished here.

use std::time::Duration;

use diesel_async::{AsyncPgConnection, SimpleAsyncConnection as _};
use e2e::databases::count;
use e2e::outbox::{LogOnly, event_id};
use e2e::{TestSystem, kafka};
use futures::{FutureExt as _, StreamExt as _};
use relay::relay::OutboxRelay;
use relay::settings::RelaySettings;
use tokio_util::sync::CancellationToken;

/// Far longer than the test waits for anything: only a notification or a read the relay
/// decided on itself publishes a row in time.
const POLL: Duration = Duration::from_secs(60);
/// How long a published row may take to show on the topic.
const PUBLISHED_WITHIN: Duration = Duration::from_secs(5);

/// Lanes of this database whose wake lock a relay holds exclusively: 8 while it sleeps.
async fn lanes_asleep(conn: &mut AsyncPgConnection) -> i64 {
    count(
        conn,
        "SELECT count(*) AS count FROM pg_locks
          WHERE locktype = 'advisory' AND classid = 2002873189 AND mode = 'ExclusiveLock' AND granted
            AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .await
}

/// Whether a notification reached `listener` within `within`.
async fn notified(listener: &mut AsyncPgConnection, within: Duration) -> bool {
    let mut notifications = std::pin::pin!(listener.notifications_stream());
    matches!(tokio::time::timeout(within, notifications.next()).await, Ok(Some(Ok(_))))
}

/// Forgets the notifications `listener` has buffered.
fn drain(listener: &mut AsyncPgConnection) {
    let mut notifications = std::pin::pin!(listener.notifications_stream());
    while let Some(Some(_)) = notifications.next().now_or_never() {}
}

async fn write(conn: &mut AsyncPgConnection, topic: &str, key: &str) -> uuid::Uuid {
    e2e::outbox::write_test_event(conn, topic, key, "wake-ups", serde_json::json!({})).await.event_id
}

/// Whether the events `ids` are all on `topic` within [`PUBLISHED_WITHIN`].
async fn published(kafka: &platform::config::KafkaSettings, topic: &str, ids: &[uuid::Uuid]) -> bool {
    let wanted = |messages: &[rdkafka::message::OwnedMessage]| {
        let seen: Vec<uuid::Uuid> = messages.iter().filter_map(event_id).collect();
        ids.iter().all(|id| seen.contains(id))
    };
    wanted(&kafka::read_topic_until(kafka, topic, PUBLISHED_WITHIN, wanted).await)
}

#[tokio::test]
async fn writers_notify_only_a_sleeping_relay_and_no_wake_up_is_lost() {
    e2e::init_telemetry();
    let log = LogOnly::create("w").await;
    let database = &log.database;
    let (kafka, topic) = log.topic("wake").await;
    let mut listener = TestSystem::connect(&database.url).await;
    listener.batch_execute("LISTEN outbox").await.expect("listen");
    let mut conn = TestSystem::connect(&database.url).await;

    // No relay sleeps: a write is silent.
    let first = write(&mut conn, &topic, "a").await;
    assert!(!notified(&mut listener, Duration::from_millis(500)).await, "a write notified while no relay slept");

    // A writer between its insert and its commit when the relay starts: silent, so the relay
    // must not sleep while it is in flight, and must read its row once it commits.
    let mut held = TestSystem::connect(&database.url).await;
    held.batch_execute("BEGIN").await.expect("begin");
    let late = write(&mut held, &topic, "b").await;
    let settings = RelaySettings {
        poll_interval_ms: POLL.as_millis() as u64,
        standby_retry_ms: POLL.as_millis() as u64,
        ..RelaySettings::default()
    };
    let shutdown = CancellationToken::new();
    let relay = OutboxRelay::new("order", database.url.clone(), &kafka, settings).expect("relay");
    let stats = relay.stats();
    let running = tokio::spawn(relay.run(shutdown.clone()));
    assert!(published(&kafka, &topic, &[first]).await, "the relay never published what was committed");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        lanes_asleep(&mut conn).await < 8,
        "the relay fell asleep with a silent writer of one of its lanes in flight"
    );
    held.batch_execute("COMMIT").await.expect("commit");
    assert!(published(&kafka, &topic, &[late]).await, "a silent writer's row waited for the poll");

    // The relay has nothing left: it sleeps, and the next write wakes it.
    e2e::eventually_async("the relay asleep on all its lanes", || {
        let url = database.url.clone();
        async move { lanes_asleep(&mut TestSystem::connect(&url).await).await == 8 }
    })
    .await;
    assert!(stats.sleeps() >= 1, "relay_sleeps_total does not count the relay's sleeps");
    drain(&mut listener);
    let woke = write(&mut conn, &topic, "c").await;
    assert!(notified(&mut listener, PUBLISHED_WITHIN).await, "a write to a sleeping relay's lane did not notify");
    assert!(published(&kafka, &topic, &[woke]).await, "the sleeping relay was not woken");

    // Woken, it looks again and sleeps again; a stream of writes meanwhile is all published.
    let mut stream = Vec::new();
    for i in 0..200 {
        stream.push(write(&mut conn, &topic, &format!("s{}", i % 17)).await);
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    }
    assert!(published(&kafka, &topic, &stream).await, "a row of a stream of writes waited for the poll");

    shutdown.cancel();
    running.await.expect("relay stopped");
}
