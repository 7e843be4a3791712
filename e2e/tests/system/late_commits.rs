//! The outbox is a log read in windows between snapshots (decision 0026): a transaction that
//! draws its outbox ids early and commits long after thousands of later ones is published
//! once it commits, nothing is skipped or published twice, the rows of one key keep their
//! order, and nothing waits for it meanwhile. Checked from the topic, not from the relay.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use diesel_async::{AsyncPgConnection, SimpleAsyncConnection as _};
use e2e::{TestSystem, kafka};
use rdkafka::Message as _;

/// How long the early transaction stays open.
const HELD: Duration = Duration::from_secs(30);
/// Keys the other transactions write, one event each, round and round.
const KEYS: usize = 60;

/// Writes event `seq` of `key` for `topic` into the outbox, on `conn`'s transaction.
async fn write(conn: &mut AsyncPgConnection, topic: &str, key: &str, seq: usize) -> uuid::Uuid {
    e2e::outbox::write_test_event(conn, topic, key, "late-commits", serde_json::json!({ "key": key, "seq": seq }))
        .await
        .event_id
}

#[tokio::test]
async fn a_transaction_held_open_is_published_when_it_commits_and_the_thousands_after_it_are_not_held_up() {
    let system = TestSystem::start().await;
    let topic = format!("{}.late", system.name);
    kafka::create_topics(&system.kafka, &[&topic]).await;
    let mut expected: Vec<uuid::Uuid> = Vec::new();

    // The early transaction draws its ids first: the first event of three keys of its own.
    let mut early = TestSystem::connect(&system.order_db).await;
    early.batch_execute("BEGIN").await.expect("begin");
    for key in ["early-a", "early-b", "early-c"] {
        expected.push(write(&mut early, &topic, key, 0).await);
    }
    let opened = Instant::now();

    // Meanwhile: thousands of transactions commit, one event each, and real orders go
    // through the whole system, each within its wait budget.
    let writer = {
        let (url, topic) = (system.order_db.clone(), topic.clone());
        tokio::spawn(async move {
            let mut conn = TestSystem::connect(&url).await;
            let mut written = Vec::new();
            let mut i = 0;
            while opened.elapsed() < HELD - Duration::from_secs(2) {
                written.push(write(&mut conn, &topic, &format!("k{}", i % KEYS), i / KEYS).await);
                i += 1;
                if i % 20 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            written
        })
    };
    let mut slowest = Duration::ZERO;
    let mut orders = 0;
    while opened.elapsed() < HELD - Duration::from_secs(3) {
        let placed = Instant::now();
        let id = system.place("CABLE-01", 1).await;
        assert_eq!(system.settled(&id).await["status"], "CONFIRMED");
        slowest = slowest.max(placed.elapsed());
        orders += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let written = writer.await.expect("writer");
    assert!(written.len() >= 2_000, "only {} later transactions committed", written.len());
    expected.extend(&written);
    assert!(slowest < Duration::from_secs(2), "an order took {slowest:?} while the transaction was open");

    tokio::time::sleep(HELD.saturating_sub(opened.elapsed())).await;
    // The early keys' next events come after the commit, as their orders' locks make them.
    expected.push(write(&mut early, &topic, "early-a", 1).await);
    early.batch_execute("COMMIT").await.expect("commit");
    let committed = chrono::Utc::now();
    let mut after = TestSystem::connect(&system.order_db).await;
    for (key, seq) in [("early-a", 2), ("early-b", 1), ("early-c", 1), ("k0", 1_000)] {
        expected.push(write(&mut after, &topic, key, seq).await);
    }

    let wanted: HashSet<uuid::Uuid> = expected.iter().copied().collect();
    let messages = kafka::read_topic_until(&system.kafka, &topic, Duration::from_secs(60), |messages| {
        messages.len() >= wanted.len()
    })
    .await;
    let mut seen = HashSet::new();
    let mut duplicates = 0;
    let mut by_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for message in &messages {
        let body: serde_json::Value = serde_json::from_slice(message.payload().unwrap_or_default()).expect("json");
        let event_id: uuid::Uuid = body["event_id"].as_str().and_then(|s| s.parse().ok()).expect("event_id");
        if !seen.insert(event_id) {
            duplicates += 1;
            continue;
        }
        by_key.entry(kafka::key(message)).or_default().push(body["seq"].as_u64().expect("seq"));
        if kafka::key(message).starts_with("early") {
            let appended = message.timestamp().to_millis().expect("timestamp");
            assert!(
                appended >= committed.timestamp_millis() - 1_000,
                "an event of the open transaction reached the topic before it committed"
            );
        }
    }
    let missing = wanted.difference(&seen).count();
    assert_eq!(missing, 0, "{missing} of {} committed events never reached the topic", wanted.len());
    assert_eq!(seen.len(), wanted.len(), "an event that was never written reached the topic");
    assert_eq!(duplicates, 0, "events published twice without a crash");
    for (key, seqs) in &by_key {
        assert!(seqs.is_sorted(), "events of {key} reached the topic out of order: {seqs:?}");
    }
    assert_eq!(by_key["early-a"], [0, 1, 2]);
    println!(
        "{} transactions committed and {orders} orders settled (slowest {slowest:?}) while one stayed open for {:?}",
        written.len(),
        HELD
    );
    system.assert_books_balance().await;
    system.stop().await;
}
