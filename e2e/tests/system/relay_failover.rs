use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use e2e::{Options, RelayHandle, TestSystem, kafka};

async fn active_one(relays: &[RelayHandle]) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(index) = relays.iter().position(|r| r.stats.is_active()) {
            return index;
        }
        assert!(tokio::time::Instant::now() < deadline, "no relay became active");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn when_the_active_relay_dies_a_standby_takes_over_and_no_event_is_lost_or_reordered() {
    let system = TestSystem::start_with(Options { order_relays: 2, inventory_relays: 2, ..Options::default() }).await;
    let order_leader = active_one(&system.order_relays).await;
    let inventory_leader = active_one(&system.inventory_relays).await;

    let mut placed = Vec::new();
    let mut cancelled = HashSet::new();
    for i in 0..60 {
        let id = system.place(["MUG-01", "CABLE-01", "MOUSE-01"][i % 3], 1).await;
        if i % 3 == 0 {
            assert_eq!(system.cancel(&id).await.status(), 202);
            cancelled.insert(id.clone());
        }
        placed.push(id);
        if i == 20 {
            system.order_relays[order_leader].kill();
            system.inventory_relays[inventory_leader].kill();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for id in &placed {
        system.settled(id).await;
    }

    assert!(system.order_relays[1 - order_leader].stats.is_active(), "the standby took over the order outbox");
    assert!(system.inventory_relays[1 - inventory_leader].stats.is_active(), "and the inventory outbox");

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
