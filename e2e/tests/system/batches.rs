//! Batches: a consumer applies the events waiting together in one transaction; when one of
//! them fails, the batch rolls back and each event is tried alone (decision 0025).

use std::time::Duration;

use diesel::dsl::sql;
use diesel::sql_types::BigInt;
use diesel_async::{RunQueryDsl as _, SimpleAsyncConnection as _};
use e2e::{Options, OutboxEnvelope, TestSystem, kafka};
use messaging::metrics::BatchOutcome;
use messaging::settings::InboxSettings;
use serde_json::{Value, json};

use crate::poison::{publish, take_outbox_rows};

#[tokio::test]
async fn a_batch_that_one_event_fails_rolls_back_and_the_others_are_applied_alone_once() {
    // A batch waits for a held row long enough here for the test to line events up behind it.
    let inbox = InboxSettings { batch_lock_wait_ms: 30_000, ..InboxSettings::default() };
    let system = TestSystem::start_with(Options { order_relays: 0, inbox: Some(inbox), ..Options::default() }).await;
    let (lamps, mugs) = (system.stock("LAMP-01").await, system.stock("MUG-01").await);
    let first = system.place("LAMP-01", 1).await;
    let mut behind = Vec::new();
    for _ in 0..5 {
        behind.push(system.place("MUG-01", 1).await);
    }
    let poisoned = system.place("MUG-01", 1).await;
    let placed = take_outbox_rows(&system, 7).await;

    // The first event's batch waits for the lamp's stock row, which the test holds, so that
    // the next six events wait together for the next batch.
    let mut holder = TestSystem::connect(&system.inventory_db).await;
    holder.batch_execute("BEGIN; SELECT 1 FROM products WHERE sku = 'LAMP-01' FOR UPDATE").await.expect("lock");
    publish(&system, &placed[0]).await;
    wait_for_a_lock_wait(&system.inventory_db).await;
    for envelope in &placed[1..6] {
        publish(&system, envelope).await;
    }
    // A payload that does not match its schema: refused inside the transaction, after its
    // inbox row was written.
    let mut poison = placed[6].clone();
    poison["payload"]["lines"] = json!([{ "sku": "MUG-01", "quantity": 1e300 }]);
    publish(&system, &poison).await;
    // Time for the consumer to fetch them (milliseconds on a local broker); one that came
    // late would only make the rolled-back batch smaller.
    tokio::time::sleep(Duration::from_secs(2)).await;
    holder.batch_execute("COMMIT").await.expect("unlock");

    assert_eq!(system.settled(&first).await["status"], "CONFIRMED");
    for id in &behind {
        assert_eq!(system.settled(id).await["status"], "CONFIRMED");
    }
    let order = system.settled(&poisoned).await;
    assert_eq!(order["status"], "REJECTED", "{order}");
    assert!(order["rejection_reason"].as_str().unwrap_or_default().contains("lines[0].quantity"), "{order}");
    assert_eq!((system.stock("LAMP-01").await, system.stock("MUG-01").await), (lamps - 1, mugs - 5));

    let (rolled_back, their_events) = system.inventory_consumer.batches(BatchOutcome::rolled_back);
    assert_eq!(rolled_back, 1, "the poisoned batch rolled back");
    assert!(their_events >= 2, "it held good events too ({their_events})");
    assert_eq!(system.inventory_consumer.processed(), 6, "each good event applied once");
    assert_eq!(system.inventory_consumer.dead_lettered(), 1);
    system.assert_books_balance().await;
    system.stop().await;
}

#[tokio::test]
async fn an_event_waiting_for_a_held_row_does_not_hold_up_the_batches_behind_it() {
    // A statement waits for a lock as long as the test lasts: only the batch's own lock wait
    // can let the events behind it go on.
    let system =
        TestSystem::start_with(Options { consumer_statement_timeout_ms: Some(120_000), ..Options::default() }).await;
    let (lamps, mugs) = (system.stock("LAMP-01").await, system.stock("MUG-01").await);
    let mut holder = TestSystem::connect(&system.inventory_db).await;
    holder.batch_execute("BEGIN; SELECT 1 FROM products WHERE sku = 'MUG-01' FOR UPDATE").await.expect("lock");
    let held = system.place("MUG-01", 1).await;
    wait_for_a_lock_wait(&system.inventory_db).await;

    let mut behind = Vec::new();
    for _ in 0..5 {
        behind.push(system.place("LAMP-01", 1).await);
    }
    for id in &behind {
        assert_eq!(system.settled(id).await["status"], "CONFIRMED", "confirmed while the mug's row is held");
    }
    assert_eq!(system.order(&held).await["status"], "PENDING");
    let (rolled_back, _) = system.inventory_consumer.batches(BatchOutcome::rolled_back);
    assert!(rolled_back >= 1, "the waiting batch gave up");

    holder.batch_execute("COMMIT").await.expect("unlock");
    assert_eq!(system.settled(&held).await["status"], "CONFIRMED");
    assert_eq!((system.stock("LAMP-01").await, system.stock("MUG-01").await), (lamps - 5, mugs - 1));
    assert_eq!(system.inventory_consumer.processed(), 6, "each event applied once");
    system.assert_books_balance().await;
    system.stop().await;
}

#[tokio::test]
async fn a_batch_locks_the_stock_rows_it_will_change_in_sku_order_before_it_changes_any() {
    // Two instances of inventory apply batches at once. One that took the mug's row and then
    // wanted the lamp's, while the other held the lamp's and wanted the mug's, would wait
    // until both rolled back.
    let inbox = InboxSettings { batch_lock_wait_ms: 30_000, ..InboxSettings::default() };
    let system = TestSystem::start_with(Options { order_relays: 0, inbox: Some(inbox), ..Options::default() }).await;
    let (lamps, mugs) = (system.stock("LAMP-01").await, system.stock("MUG-01").await);
    let first = system.place("POSTER-01", 1).await;
    let mug = system.place("MUG-01", 1).await;
    let lamp = system.place("LAMP-01", 1).await;
    let placed = take_outbox_rows(&system, 3).await;

    // The poster's batch waits for its row, so that the mug's and the lamp's placements (in
    // that order) wait together for the next batch.
    let mut poster = TestSystem::connect(&system.inventory_db).await;
    poster.batch_execute("BEGIN; SELECT 1 FROM products WHERE sku = 'POSTER-01' FOR UPDATE").await.expect("lock");
    publish(&system, &placed[0]).await;
    wait_for_a_lock_wait(&system.inventory_db).await;
    publish(&system, &placed[1]).await;
    publish(&system, &placed[2]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Another instance's batch holds the lamp's row.
    let mut other = TestSystem::connect(&system.inventory_db).await;
    other.batch_execute("BEGIN; SELECT 1 FROM products WHERE sku = 'LAMP-01' FOR UPDATE").await.expect("lock");
    poster.batch_execute("COMMIT").await.expect("unlock");
    assert_eq!(system.settled(&first).await["status"], "CONFIRMED");
    wait_for_a_lock_wait(&system.inventory_db).await;

    // The mug's placement comes first in the batch, yet the batch waits for the lamp's row
    // without holding the mug's: it locks in SKU order before it changes anything.
    let mut probe = TestSystem::connect(&system.inventory_db).await;
    let mug_row = probe.batch_execute("BEGIN; SELECT 1 FROM products WHERE sku = 'MUG-01' FOR UPDATE NOWAIT").await;
    assert!(mug_row.is_ok(), "the waiting batch holds the mug's row: {mug_row:?}");
    probe.batch_execute("ROLLBACK").await.expect("rollback");
    other.batch_execute("COMMIT").await.expect("unlock");

    for id in [&mug, &lamp] {
        assert_eq!(system.settled(id).await["status"], "CONFIRMED");
    }
    assert_eq!((system.stock("LAMP-01").await, system.stock("MUG-01").await), (lamps - 1, mugs - 1));
    let (rolled_back, _) = system.inventory_consumer.batches(BatchOutcome::rolled_back);
    assert_eq!(rolled_back, 0, "no batch gave up");
    let (committed, events) = system.inventory_consumer.batches(BatchOutcome::committed);
    assert!(events > committed, "two placements shared a batch ({events} events in {committed} batches)");
    system.assert_books_balance().await;
    system.stop().await;
}

/// Until a session of the database at `url` waits for a row lock.
async fn wait_for_a_lock_wait(url: &str) {
    e2e::eventually_async("a session waits for the held row", || async {
        let mut conn = TestSystem::connect(url).await;
        let waiting =
            "(SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock')";
        diesel::select(sql::<BigInt>(waiting)).get_result::<i64>(&mut conn).await.expect("count") >= 1
    })
    .await;
}

#[tokio::test]
async fn an_order_applied_again_after_its_batch_rolled_back_is_counted_once() {
    // The order service's consumer this time: inventory's answers are published by the test.
    let inbox = InboxSettings { batch_lock_wait_ms: 30_000, ..InboxSettings::default() };
    let system =
        TestSystem::start_with(Options { inventory_relays: 0, inbox: Some(inbox), ..Options::default() }).await;
    for _ in 0..7 {
        system.place("MUG-01", 1).await;
    }
    let answers: Vec<Value> =
        TestSystem::take_outbox(&system.inventory_db, 7).await.iter().map(OutboxEnvelope::envelope).collect();
    let order_of = |answer: &Value| answer["aggregate_id"].as_str().expect("order id").to_owned();
    let on_topic = &system;
    let publish = |answer: Value| async move {
        let key = order_of(&answer);
        kafka::publish_raw(on_topic.producer(), &on_topic.topics.inventory, &key, answer.to_string().as_bytes()).await;
    };

    // The first answer's batch waits for its order's row, which the test holds.
    let mut holder = TestSystem::connect(&system.order_db).await;
    let lock = format!("BEGIN; SELECT 1 FROM orders WHERE id = '{}' FOR UPDATE", order_of(&answers[0]));
    holder.batch_execute(&lock).await.expect("lock");
    publish(answers[0].clone()).await;
    wait_for_a_lock_wait(&system.order_db).await;
    for answer in &answers[1..6] {
        publish(answer.clone()).await;
    }
    // An answer that cannot be read: its order is cancelled (decision 0011).
    let mut poison = answers[6].clone();
    poison["payload"]["lines"] = json!("two mugs");
    publish(poison).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    holder.batch_execute("COMMIT").await.expect("unlock");
    // The cancellation's release, published from now on.
    let _relay = system.spawn_relay("inventory", &system.inventory_db);

    for answer in &answers[..6] {
        assert_eq!(system.settled(&order_of(answer)).await["status"], "CONFIRMED");
    }
    assert_eq!(system.settled(&order_of(&answers[6])).await["status"], "CANCELLED");
    let (rolled_back, their_events) = system.order_consumer.batches(BatchOutcome::rolled_back);
    assert_eq!(rolled_back, 1, "the poisoned batch rolled back");
    assert!(their_events >= 2, "it held good answers too ({their_events})");
    let metrics = system.http.get(format!("{}/metrics", system.order_url)).send().await.expect("answers");
    let text = metrics.text().await.expect("text");
    let confirmed = text.lines().find_map(|line| line.strip_prefix("orders_total{outcome=\"confirmed\"} "));
    assert_eq!(confirmed, Some("6"), "each confirmed order counted once:\n{text}");
    system.assert_books_balance().await;
    system.stop().await;
}
