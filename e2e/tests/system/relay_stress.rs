//! Many writers at once, with transactions of every shape — one row or thirty, an id taken
//! early or late, committed at once or after a pause, a few rolled back — and the relay must
//! publish every committed row exactly once, none of a rolled-back one. Checked from the topic.
//! `RELAY_STRESS_SECS` makes the run longer (20 s by default).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use diesel_async::SimpleAsyncConnection as _;
use e2e::outbox::write_test_event;
use e2e::{TestSystem, kafka};
use rdkafka::Message as _;

const WRITERS: u64 = 12;

/// A small deterministic generator, one per writer.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// One row: where it went, for the report of a row that never arrived.
struct Row {
    id: i64,
    tx: String,
    lane: i16,
    writer: u64,
    committed_at: chrono::DateTime<chrono::Utc>,
}

/// Writes transactions of random shapes until `until`; returns the rows that committed.
async fn writer(url: String, topic: String, number: u64, until: Instant) -> HashMap<uuid::Uuid, Row> {
    let mut conn = TestSystem::connect(&url).await;
    let mut dice = Dice(0x9E37_79B9_7F4A_7C15 ^ (number + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let mut committed = HashMap::new();
    let mut serial = 0u64;
    while Instant::now() < until {
        conn.batch_execute("BEGIN").await.expect("begin");
        if dice.roll(3) == 0 {
            // The transaction id first, the outbox ids a while later.
            conn.batch_execute("SELECT pg_current_xact_id()").await.expect("xid");
            tokio::time::sleep(Duration::from_millis(dice.roll(15))).await;
        }
        let rows = if dice.roll(4) == 0 { 1 + dice.roll(30) } else { 1 + dice.roll(3) };
        let mut these = Vec::new();
        for _ in 0..rows {
            serial += 1;
            let key = format!("w{number}-{}", serial % 50);
            these.push(write_test_event(&mut conn, &topic, &key, "relay-stress", serde_json::json!({})).await);
            if dice.roll(5) == 0 {
                tokio::time::sleep(Duration::from_millis(dice.roll(5))).await;
            }
        }
        match dice.roll(100) {
            0 => tokio::time::sleep(Duration::from_millis(500 + dice.roll(2_000))).await,
            1..=20 => tokio::time::sleep(Duration::from_millis(dice.roll(20))).await,
            _ => {}
        }
        if dice.roll(40) == 0 {
            conn.batch_execute("ROLLBACK").await.expect("rollback");
            continue;
        }
        conn.batch_execute("COMMIT").await.expect("commit");
        let committed_at = chrono::Utc::now();
        for w in these {
            committed.insert(w.event_id, Row { id: w.id, tx: w.tx, lane: w.lane, writer: number, committed_at });
        }
    }
    committed
}

#[tokio::test]
async fn every_committed_row_of_many_concurrent_writers_is_published_once() {
    let secs = std::env::var("RELAY_STRESS_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let system = TestSystem::start().await;
    let topic = format!("{}.stress", system.name);
    kafka::create_topics(&system.kafka, &[&topic]).await;

    let until = Instant::now() + Duration::from_secs(secs);
    let writers: Vec<_> =
        (0..WRITERS).map(|n| tokio::spawn(writer(system.order_db.clone(), topic.clone(), n, until))).collect();
    let mut committed = HashMap::new();
    for w in writers {
        committed.extend(w.await.expect("writer"));
    }
    assert!(committed.len() >= 1_000, "only {} rows committed", committed.len());

    let messages = kafka::read_topic_until(&system.kafka, &topic, Duration::from_secs(60), |messages| {
        messages.len() >= committed.len()
    })
    .await;
    let mut seen: HashMap<uuid::Uuid, usize> = HashMap::new();
    for message in &messages {
        let body: serde_json::Value = serde_json::from_slice(message.payload().unwrap_or_default()).expect("json");
        let event_id: uuid::Uuid = body["event_id"].as_str().and_then(|s| s.parse().ok()).expect("event_id");
        *seen.entry(event_id).or_default() += 1;
    }
    let mut missing: Vec<&Row> = committed.iter().filter(|(id, _)| !seen.contains_key(id)).map(|(_, r)| r).collect();
    missing.sort_by_key(|r| r.id);
    let strangers = seen.keys().filter(|id| !committed.contains_key(id)).count();
    let twice = seen.values().filter(|n| **n > 1).count();
    for row in missing.iter().take(40) {
        println!(
            "missing: id {} tx {} lane {} of writer {}, committed at {}",
            row.id, row.tx, row.lane, row.writer, row.committed_at
        );
    }
    assert!(missing.is_empty(), "{} of {} committed rows never reached the topic", missing.len(), committed.len());
    assert_eq!(strangers, 0, "rows that were rolled back (or never written) reached the topic");
    assert_eq!(twice, 0, "rows published twice without a crash");
    println!("{} rows of {WRITERS} writers in {secs} s, all published once", committed.len());
    system.stop().await;
}
