//! Poison: events the services cannot apply never hold up the events behind them, and the
//! order each was about still ends (decision 0011).

use std::collections::HashSet;
use std::time::Duration;

use diesel_async::SimpleAsyncConnection as _;
use e2e::{Options, OutboxEnvelope as _, TestSystem, kafka};
use messaging::settings::InboxSettings;
use proptest::strategy::{Strategy as _, ValueTree as _};
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};

use crate::hostile;

/// The order outbox's envelopes (no order relay runs), taken out of it, oldest first.
pub(crate) async fn take_outbox_rows(system: &TestSystem, count: usize) -> Vec<Value> {
    TestSystem::take_outbox(&system.order_db, count).await.into_iter().map(|row| row.envelope()).collect()
}

pub(crate) async fn publish(system: &TestSystem, envelope: &Value) {
    let key = envelope["aggregate_id"].as_str().expect("aggregate id");
    kafka::publish_raw(system.producer(), &system.topics.orders, key, envelope.to_string().as_bytes()).await;
}

#[tokio::test]
async fn every_kind_of_poison_is_dead_lettered_and_every_order_still_ends() {
    let system = TestSystem::start_with(Options { order_relays: 0, ..Options::default() }).await;
    let before = system.stock("MUG-01").await;
    let ids = [
        system.place("MUG-01", 1).await,
        system.place("MUG-01", 1).await,
        system.place("MUG-01", 1).await,
        system.place("MUG-01", 1).await,
    ];
    let placed = take_outbox_rows(&system, 4).await;
    let [nul_value, wrong_type, behind_unknown, behind_bad_type] = &placed[..] else { unreachable!() };

    // A value Postgres cannot store, refused on reading; its order is answered from its ids.
    let mut poison = nul_value.clone();
    poison["payload"]["customer_id"] = json!("ali\u{0}ce");
    publish(&system, &poison).await;
    // A payload that does not match its schema.
    let mut poison = wrong_type.clone();
    poison["payload"]["lines"] = json!([{ "sku": "MUG-01", "quantity": 1e300 }]);
    publish(&system, &poison).await;
    // Ahead of two good events of their own orders: a type this topic does not carry, a type
    // the database cannot store, and bytes that are no envelope at all.
    let mut unknown = behind_unknown.clone();
    unknown["event_id"] = json!(schema::EventId::new());
    unknown["event_type"] = json!("OrderShipped");
    publish(&system, &unknown).await;
    let mut bad_type = behind_bad_type.clone();
    bad_type["event_id"] = json!(schema::EventId::new());
    bad_type["event_type"] = json!("Order\u{0}Placed");
    publish(&system, &bad_type).await;
    let key = behind_unknown["aggregate_id"].as_str().expect("id");
    kafka::publish_raw(system.producer(), &system.topics.orders, key, b"\xff\xfe not even utf-8").await;
    publish(&system, behind_unknown).await;
    publish(&system, behind_bad_type).await;

    for (id, status, says) in [
        (&ids[0], "REJECTED", "customer_id"),
        (&ids[1], "REJECTED", "lines[0].quantity"),
        (&ids[2], "CONFIRMED", ""),
        (&ids[3], "CONFIRMED", ""),
    ] {
        let order = system.settled(id).await;
        assert_eq!(order["status"], status, "{order}");
        let reason = order["rejection_reason"].as_str().unwrap_or_default();
        assert!(reason.contains(says), "the reason names {says}: {order}");
    }
    assert_eq!(system.stock("MUG-01").await, before - 2, "only the good events reserved stock");

    let letters = kafka::dead_letters(&system.kafka, &system.topics.orders, 5).await;
    assert_eq!(letters.len(), 5, "{letters:#?}");
    let reasons: Vec<&str> = letters.iter().map(|l| l.error.as_str()).collect();
    for expected in ["NUL", "lines[0].quantity", "unknown event type \"OrderShipped\"", "event_type", "unreadable"] {
        assert!(reasons.iter().any(|r| r.contains(expected)), "a dead letter says {expected:?}: {reasons:#?}");
    }
    assert!(letters.iter().all(|l| l.attempts == Some(1)), "refused at once: {letters:#?}");
    e2e::eventually("dead letters counted", || system.inventory_consumer.dead_lettered() == 5).await;
    let health = system.http.get(format!("{}/health", system.inventory_url)).send().await.expect("answers");
    assert_eq!(health.status(), 200, "nothing is stuck: {}", health.text().await.unwrap_or_default());
    system.assert_books_balance().await;
    system.stop().await;
}

#[tokio::test]
async fn an_unreadable_answer_from_inventory_cancels_its_order_and_releases_the_stock() {
    let system = TestSystem::start_with(Options { inventory_relays: 0, ..Options::default() }).await;
    let before = system.stock("MUG-01").await;
    let id = system.place("MUG-01", 2).await;
    let [reserved] = &TestSystem::take_outbox(&system.inventory_db, 1).await[..] else { unreachable!() };
    assert_eq!(reserved.event_type, "InventoryReserved");
    assert_eq!(system.stock("MUG-01").await, before - 2);
    let mut broken = reserved.envelope();
    broken["payload"]["lines"] = json!("two mugs");
    kafka::publish_raw(
        system.producer(),
        &system.topics.inventory,
        &reserved.message_key,
        broken.to_string().as_bytes(),
    )
    .await;

    // The order cannot know whether stock was reserved: it is cancelled, inventory releases
    // what it holds, and the release (published by a relay started now) ends it.
    let _relay = system.spawn_relay("inventory", &system.inventory_db);
    let order = system.settled(&id).await;
    assert_eq!(order["status"], "CANCELLED", "{order}");
    let history = order["history"].to_string();
    assert!(history.contains("could not be processed"), "the history says why: {order}");
    assert_eq!(system.stock("MUG-01").await, before, "the reservation was released");
    e2e::eventually("dead letter counted", || system.order_consumer.dead_lettered() == 1).await;
    system.assert_books_balance().await;
    system.stop().await;
}

#[tokio::test]
async fn a_partition_stuck_behind_a_failing_event_makes_health_not_ready_until_it_moves() {
    let system = TestSystem::start_with(Options {
        consumer_statement_timeout_ms: Some(300),
        inbox: Some(InboxSettings { stall_after_secs: 1, ..InboxSettings::default() }),
        ..Options::default()
    })
    .await;
    // Someone holds the product's row: every statement of the reservation times out.
    let mut holder = TestSystem::connect(&system.inventory_db).await;
    holder.batch_execute("BEGIN; SELECT 1 FROM products WHERE sku = 'MUG-01' FOR UPDATE").await.expect("lock");
    let id = system.place("MUG-01", 1).await;

    let health = format!("{}/health", system.inventory_url);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let body = loop {
        let response = system.http.get(&health).send().await.expect("answers");
        let status = response.status();
        let body = response.text().await.expect("body");
        if status == 503 && body.contains("consumer progress") {
            break body;
        }
        assert!(tokio::time::Instant::now() < deadline, "never reported stuck: {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(body.contains(&format!("{}[", system.topics.orders)), "names the partition: {body}");
    assert!(body.contains("statement timeout"), "says why: {body}");
    let metrics = format!("{}/metrics", system.inventory_url);
    e2e::eventually_async("the stall in the metric", || async {
        let text = system.http.get(&metrics).send().await.expect("answers").text().await.expect("text");
        text.lines().any(|l| l.starts_with("consumer_stalled_seconds{") && !l.ends_with(" 0"))
    })
    .await;
    assert_eq!(system.order(&id).await["status"], "PENDING", "a busy database is waited for, not dead-lettered");

    holder.batch_execute("ROLLBACK").await.expect("unlock");
    assert_eq!(system.settled(&id).await["status"], "CONFIRMED");
    e2e::eventually_async("ready again", || async {
        system.http.get(&health).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert_eq!(system.inventory_consumer.dead_lettered(), 0);
    system.assert_books_balance().await;
    system.stop().await;
}

#[tokio::test]
async fn arbitrary_events_end_applied_or_dead_lettered_and_the_orders_behind_them_go_through() {
    let system = TestSystem::start().await;
    // Hostile values in every field of every event type (the strategies of the reader's
    // property tests), from a fixed seed so a failure replays.
    let mut runner = TestRunner::deterministic();
    let strategy = hostile::envelope();
    let mut published = 0;
    for _ in 0..48 {
        let envelope = strategy.new_tree(&mut runner).expect("a value").current();
        publish(&system, &envelope).await;
        published += 1;
    }
    let ids = [system.place("MUG-01", 1).await, system.place("LAMP-01", 1).await, system.place("MUG-01", 2).await];
    for id in &ids {
        assert_eq!(system.settled(id).await["status"], "CONFIRMED", "order {id} went through");
    }
    let stats = &system.inventory_consumer;
    e2e::eventually("every event ended", || stats.processed() + stats.dead_lettered() >= published + ids.len() as u64)
        .await;
    let letters = kafka::dead_letters(&system.kafka, &system.topics.orders, stats.dead_lettered() as usize).await;
    assert_eq!(letters.len() as u64, stats.dead_lettered(), "every refused event is in the dead-letter topic");
    let positions: HashSet<_> = letters.iter().map(|l| (l.original_partition, l.original_offset)).collect();
    assert_eq!(positions.len(), letters.len(), "each dead-lettered once");
    assert!(letters.iter().all(|l| !l.error.is_empty()), "each with its reason");
    system.assert_books_balance().await;
    system.stop().await;
}

#[tokio::test]
async fn a_cancellation_inventory_cannot_process_changes_no_stock_and_the_order_returns_to_what_inventory_holds() {
    let system = TestSystem::start_with(Options { order_relays: 0, ..Options::default() }).await;
    let before = system.stock("MUG-01").await;
    let [confirmed, cancelling] = [system.place("MUG-01", 1).await, system.place("MUG-01", 2).await];
    for placed in take_outbox_rows(&system, 2).await {
        publish(&system, &placed).await;
    }
    for id in [&confirmed, &cancelling] {
        assert_eq!(system.settled(id).await["status"], "CONFIRMED");
    }

    // A broken cancellation nobody asked for, about a confirmed order: nothing changes.
    let forged = json!({
        "event_id": schema::EventId::new(), "event_type": "OrderCancelled", "schema_version": 1,
        "aggregate_id": confirmed, "occurred_at": "2026-11-28T12:00:00Z", "correlation_id": "forged",
        "payload": { "order_id": "not an id" },
    });
    publish(&system, &forged).await;
    // A real cancellation whose event broke on the way.
    assert_eq!(system.cancel(&cancelling).await.status(), 202);
    let [real] = &take_outbox_rows(&system, 1).await[..] else { unreachable!() };
    assert_eq!(real["event_type"], "OrderCancelled");
    let mut broken = real.clone();
    broken["payload"]["order_id"] = json!(42);
    publish(&system, &broken).await;

    let letters = kafka::dead_letters(&system.kafka, &system.topics.orders, 2).await;
    assert_eq!(letters.len(), 2, "{letters:#?}");
    e2e::eventually_async("the cancelling order is back to confirmed", || async {
        system.order(&cancelling).await["status"] == "CONFIRMED"
    })
    .await;
    let order = system.order(&cancelling).await;
    assert!(order["history"].to_string().contains("cancellation could not be processed"), "{order}");
    assert_eq!(system.order(&confirmed).await["status"], "CONFIRMED");
    assert_eq!(system.stock("MUG-01").await, before - 3, "no stock was released");
    system.assert_books_balance().await;
    system.stop().await;
}
