use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use e2e::{Options, RelayHandle, TestSystem, kafka};

/// Waits until every relay in `relays` publishes `lanes` lanes.
async fn lanes_settle(relays: &[&RelayHandle], lanes: i64, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !relays.iter().all(|r| r.stats.lanes_held() == lanes) {
        let held: Vec<i64> = relays.iter().map(|r| r.stats.lanes_held()).collect();
        assert!(tokio::time::Instant::now() < deadline, "{what}: lanes held {held:?}, expected {lanes} each");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn two_relays_share_the_lanes_and_when_one_dies_the_other_takes_its_lanes_losing_and_reordering_nothing() {
    let system = TestSystem::start_with(Options { order_relays: 2, inventory_relays: 2, ..Options::default() }).await;
    let (order, inventory) = (&system.order_relays, &system.inventory_relays);
    lanes_settle(&[&order[0], &order[1]], 4, "two order relays share eight lanes").await;
    lanes_settle(&[&inventory[0], &inventory[1]], 4, "two inventory relays share eight lanes").await;

    let mut placed = Vec::new();
    let mut cancelled = HashSet::new();
    let mut published_before_the_kill = (0, 0);
    for i in 0..60 {
        let id = system.place(["MUG-01", "CABLE-01", "MOUSE-01"][i % 3], 1).await;
        if i % 3 == 0 {
            assert_eq!(system.cancel(&id).await.status(), 202);
            cancelled.insert(id.clone());
        }
        placed.push(id);
        if i == 30 {
            let written = (placed.len() + cancelled.len()) as u64;
            published_before_the_kill = (order[0].stats.published_count(), order[1].stats.published_count());
            let (first, second) = published_before_the_kill;
            assert!(
                first + second <= written,
                "{first} + {second} events published of {written}: a lane had two publishers"
            );
            order[0].kill();
            inventory[0].kill();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for id in &placed {
        system.settled(id).await;
    }
    assert!(
        published_before_the_kill.0 > 0 && published_before_the_kill.1 > 0,
        "both order relays published while both ran: {published_before_the_kill:?}"
    );
    lanes_settle(&[&order[1]], 8, "the surviving order relay took every lane").await;
    lanes_settle(&[&inventory[1]], 8, "the surviving inventory relay took every lane").await;

    // Every order's events, first occurrences only, in the order a consumer saw them. The
    // failover may have published some twice, so read until every distinct event is in.
    let expected = placed.len() + cancelled.len();
    let distinct = |messages: &[rdkafka::message::OwnedMessage]| {
        messages.iter().map(|m| rdkafka::Message::payload(m).unwrap_or_default()).collect::<HashSet<_>>().len()
    };
    let messages = kafka::read_topic_until(&system.kafka, &system.topics.orders, Duration::from_secs(30), |m| {
        distinct(m) >= expected
    })
    .await;
    let mut seen = HashSet::new();
    let mut sequences: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for message in &messages {
        let envelope =
            schema::RawEnvelope::from_slice(rdkafka::Message::payload(message).unwrap_or_default()).expect("envelope");
        if seen.insert(envelope.event_id) {
            sequences.entry(kafka::key(message)).or_default().push(envelope.event_type);
        }
    }
    for id in &placed {
        let expected: &[&str] =
            if cancelled.contains(id) { &["OrderPlaced", "OrderCancelled"] } else { &["OrderPlaced"] };
        assert_eq!(sequences.get(id).map(Vec::as_slice).unwrap_or_default(), expected, "events of order {id}");
        let order = system.order(id).await;
        assert_eq!(order["status"], if cancelled.contains(id) { "CANCELLED" } else { "CONFIRMED" });
    }
    system.assert_books_balance().await;
    system.stop().await;
}
