use std::time::Duration;

use e2e::{Options, OutboxEnvelope as _, TestSystem, kafka};
use messaging::dead_letter::DeadLetter;
use rdkafka::producer::FutureRecord;

async fn dead_letters(system: &TestSystem, topic: &str, count: usize) -> Vec<DeadLetter> {
    kafka::dead_letters(&system.kafka, topic, count).await
}

#[tokio::test]
async fn garbage_on_the_orders_topic_is_dead_lettered_and_the_orders_behind_it_go_through() {
    let system = TestSystem::start().await;
    // One unreadable message at the head of every partition, so that every order placed
    // below is queued behind one.
    let producer = platform::kafka::producer(&system.kafka).expect("producer");
    for partition in 0..kafka::PARTITIONS {
        let record = FutureRecord::to(&system.topics.orders)
            .partition(partition)
            .key("not-an-order")
            .payload("{this is not an event");
        producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("garbage published");
    }
    let before = system.stock("KEYBOARD-01").await;
    let ids = [
        system.place("KEYBOARD-01", 1).await,
        system.place("KEYBOARD-01", 2).await,
        system.place("KEYBOARD-01", 3).await,
    ];
    for id in &ids {
        assert_eq!(system.settled(id).await["status"], "CONFIRMED", "order {id} was processed");
    }
    assert_eq!(system.stock("KEYBOARD-01").await, before - 6);

    let letters = dead_letters(&system, &system.topics.orders, 3).await;
    assert_eq!(letters.len(), 3, "one dead letter per garbage message: {letters:#?}");
    for letter in &letters {
        assert!(letter.error.starts_with("unreadable event"), "error says why: {}", letter.error);
        assert_eq!(letter.original_topic, system.topics.orders);
        assert_eq!(letter.original_offset, Some(0), "the coordinates of the original");
        assert_eq!(letter.group, format!("{}-inventory", system.name));
        assert_eq!(letter.payload.as_deref(), Some(&b"{this is not an event"[..]), "the original bytes");
    }
    e2e::eventually("dead letters counted", || system.inventory_consumer.dead_lettered() == 3).await;
    assert_eq!(system.inventory_consumer.processed(), 3);
    system.assert_books_balance().await;
    system.stop().await;
}

/// Places one order with no order relay running and takes its `OrderPlaced` out of the
/// outbox: the test publishes it itself, broken.
async fn take_the_placement(system: &TestSystem, quantity: i64) -> (String, relay::publish::Outgoing) {
    let id = system.place("MUG-01", quantity).await;
    let [row] = TestSystem::take_outbox(&system.order_db, 1).await.try_into().expect("one row");
    (id, row)
}

/// Redrives the dead letter at `letter` with its payload replaced by `fixed`, twice (an
/// operator's mistake).
fn redrive_twice(system: &TestSystem, letter: &DeadLetter, fixed: &str) {
    for _ in 0..2 {
        kafka::redrive_with_payload(&system.kafka, &system.topics.orders, letter, fixed);
    }
}

#[tokio::test]
async fn a_broken_placement_rejects_its_order_and_a_redrive_of_it_changes_nothing() {
    let system = TestSystem::start_with(Options { order_relays: 0, ..Options::default() }).await;
    let before = system.stock("MUG-01").await;
    let (id, row) = take_the_placement(&system, 3).await;
    let mut broken = row.envelope();
    broken["payload"]["lines"] = serde_json::json!("three mugs, please");
    kafka::publish_raw(system.producer(), &row.topic, &row.message_key, broken.to_string().as_bytes()).await;

    // Its content is refused: dead-lettered at the first attempt, and its order rejected.
    let letters = dead_letters(&system, &system.topics.orders, 1).await;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.event_id.as_deref(), Some(row.event_id.to_string().as_str()));
    assert_eq!(letter.attempts, Some(1), "a refused event is not tried again");
    assert!(letter.error.contains("lines"), "error names the bad field: {}", letter.error);
    let order = system.settled(&id).await;
    assert_eq!(order["status"], "REJECTED", "{order}");
    let reason = order["rejection_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("unprocessable") && reason.contains("lines"), "the reason says why: {order}");
    assert_eq!(system.stock("MUG-01").await, before, "nothing reserved for the broken event");

    // Redriving it, even fixed, changes nothing: its order has ended.
    redrive_twice(&system, letter, &row.envelope().to_string());
    e2e::eventually("both redrives recognised", || system.inventory_consumer.duplicates() >= 2).await;
    assert_eq!(system.order(&id).await["status"], "REJECTED");
    assert_eq!(system.inventory_consumer.processed(), 0);
    assert_eq!(system.stock("MUG-01").await, before);
    system.assert_books_balance().await;
    system.stop().await;
}

#[tokio::test]
async fn a_fixed_unreadable_event_redriven_from_the_dead_letter_topic_is_applied_exactly_once() {
    let system = TestSystem::start_with(Options { order_relays: 0, ..Options::default() }).await;
    let before = system.stock("MUG-01").await;
    let (id, row) = take_the_placement(&system, 3).await;
    let fixed = row.envelope().to_string();
    // A producer bug cut the message short: nothing in it can be trusted, not even its ids.
    kafka::publish_raw(system.producer(), &row.topic, &row.message_key, &fixed.as_bytes()[..fixed.len() / 2]).await;

    let letters = dead_letters(&system, &system.topics.orders, 1).await;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert!(letter.error.starts_with("unreadable event"), "{}", letter.error);
    assert_eq!(system.order(&id).await["status"], "PENDING", "no order could be named");

    // The operator fixes it and redrives it with the CLI, twice by mistake.
    redrive_twice(&system, letter, &fixed);
    let listed = e2e::kafka::dlq(&system.kafka).args(["list", &system.topics.orders]).output().expect("dlq runs");
    let listing = String::from_utf8_lossy(&listed.stdout);
    assert!(listing.contains("unreadable"), "list shows it: {listing}");

    assert_eq!(system.settled(&id).await["status"], "CONFIRMED");
    e2e::eventually("the second redrive recognised", || system.inventory_consumer.duplicates() >= 1).await;
    assert_eq!(system.inventory_consumer.processed(), 1, "applied once");
    assert_eq!(system.inventory_consumer.dead_lettered(), 1);
    assert_eq!(system.stock("MUG-01").await, before - 3, "stock deducted once");
    system.assert_books_balance().await;
    system.stop().await;
}
