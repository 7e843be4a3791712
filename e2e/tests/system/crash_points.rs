//! Crash points set to `error`, in-process: each failure must leave the books exact. (The
//! `abort` variants kill real processes; see `e2e/tests/processes`.) A point is process-wide:
//! `TestSystem::arm` refuses to arm one while another test system runs in the process.

use e2e::TestSystem;
use serde_json::{Value, json};

#[tokio::test]
async fn a_failure_before_inventory_commits_applies_nothing_and_the_retry_applies_once() {
    let system = TestSystem::start().await;
    let _armed = system.arm("inventory.before_commit", "1*error");
    let before = system.stock("MUG-01").await;

    let id = system.place("MUG-01", 2).await;

    assert_eq!(system.settled(&id).await["status"], "CONFIRMED");
    assert_eq!(system.stock("MUG-01").await, before - 2);
    assert_eq!((system.inventory_consumer.processed(), system.inventory_consumer.duplicates()), (1, 0));
    system.assert_books_balance().await;
    system.stop().await;
}

#[tokio::test]
async fn an_event_whose_acknowledgement_fails_three_times_is_applied_once() {
    let system = TestSystem::start().await;
    let _armed = system.arm("inventory.after_commit_before_ack", "3*error");
    let before = system.stock("MUG-01").await;

    let id = system.place("MUG-01", 3).await;

    assert_eq!(system.settled(&id).await["status"], "CONFIRMED");
    e2e::eventually("three redeliveries", || system.inventory_consumer.duplicates() == 3).await;
    assert_eq!(system.inventory_consumer.processed(), 1);
    assert_eq!(system.stock("MUG-01").await, before - 3);
    system.assert_books_balance().await;
    system.stop().await;
}

#[tokio::test]
async fn a_reply_lost_after_commit_is_recovered_by_retrying_with_the_same_key() {
    let system = TestSystem::start().await;
    let _armed = system.arm("order.after_commit_before_reply", "1*error");
    let before = system.stock("LAMP-01").await;
    let body = json!({"lines": [{"sku": "LAMP-01", "quantity": 1}]});

    let lost = system.post_order("lost-reply", &body).await;
    assert_eq!(lost.status(), 500, "the client does not know what happened");
    let retry = system.post_order("lost-reply", &body).await;

    assert!(matches!(retry.status().as_u16(), 201 | 202));
    let order: Value = retry.json().await.expect("json");
    assert_eq!(system.settled(order["id"].as_str().expect("id")).await["status"], "CONFIRMED");
    assert_eq!(system.books().await.orders(), 1, "one order, not two");
    assert_eq!(system.stock("LAMP-01").await, before - 1);
    system.assert_books_balance().await;
    system.stop().await;
}

#[tokio::test]
async fn a_relay_that_fails_between_publish_and_delete_republishes_and_nothing_applies_twice() {
    let system = TestSystem::start().await;
    let _armed = system.arm("relay.after_publish_before_position", "1*error");
    let before = system.stock("CABLE-01").await;

    let id = system.place("CABLE-01", 6).await;

    assert_eq!(system.settled(&id).await["status"], "CONFIRMED");
    // The first relay pass (whichever outbox it was) published and failed before deleting; the
    // re-elected session published the same rows again.
    e2e::eventually("a duplicate delivery", || {
        system.inventory_consumer.duplicates() + system.order_consumer.duplicates() >= 1
    })
    .await;
    assert_eq!(system.stock("CABLE-01").await, before - 6);
    system.assert_books_balance().await;
    system.stop().await;
}
