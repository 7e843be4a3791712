//! Shipping (decision 0019): a fulfilment operator ships a confirmed order through the
//! outbox; inventory takes its reserved units out of the warehouse through its inbox and
//! answers; the order ends SHIPPED, and can no longer be cancelled.

use std::time::Duration;

use e2e::{Options, TestSystem, kafka};
use schema::Envelope;
use schema::events::OrderReadyToShip;
use serde_json::Value;

#[tokio::test]
async fn a_confirmed_order_ships_and_its_units_leave_the_warehouse_once() {
    let system = TestSystem::start().await;
    let (available, on_hand, reserved) = system.stock_levels("LAMP-01").await;
    let id = system.place("LAMP-01", 2).await;
    assert_eq!(system.settled(&id).await["status"], "CONFIRMED");
    assert_eq!(system.stock_levels("LAMP-01").await, (available - 2, on_hand, reserved + 2), "reserved, still here");

    let shipped = system.ship(&id, "ship-1").await;
    assert!(matches!(shipped.status().as_u16(), 200 | 202), "{}", shipped.status());
    assert!(shipped.headers().get("idempotent-replayed").is_none());
    let order = system.settled(&id).await;
    assert_eq!(order["status"], "SHIPPED", "{order}");
    let history: Vec<&str> =
        order["history"].as_array().expect("history").iter().map(|h| h["status"].as_str().expect("status")).collect();
    assert_eq!(history, ["PENDING", "CONFIRMED", "SHIPPING", "SHIPPED"]);
    assert_eq!(system.stock_levels("LAMP-01").await, (available - 2, on_hand - 2, reserved), "gone from the shelf");

    // The operator's retry, and a second operator's request: no-ops answered with the order.
    let retry = system.ship(&id, "ship-1").await;
    assert_eq!(retry.status(), 200);
    assert_eq!(retry.headers().get("idempotent-replayed").map(|v| v.as_bytes()), Some(&b"true"[..]));
    assert_eq!(retry.json::<Value>().await.expect("json")["status"], "SHIPPED");
    let other = system.ship(&id, "ship-2").await;
    assert_eq!(other.status(), 200);
    assert!(other.headers().get("idempotent-replayed").is_none());

    let cancel = system.cancel(&id).await;
    assert_eq!(cancel.status(), 409);
    let body: Value = cancel.json().await.expect("json");
    assert_eq!(body["error"], "not_cancellable");
    assert!(body["message"].as_str().expect("message").contains("has shipped"), "{body}");

    assert_eq!(system.stock_levels("LAMP-01").await, (available - 2, on_hand - 2, reserved), "nothing moved twice");
    system.assert_books_balance().await;
    system.stop().await;
}

#[tokio::test]
async fn only_a_confirmed_order_ships_and_only_for_an_operator() {
    let system = TestSystem::start().await;
    let poster = system.stock("POSTER-01").await;
    let rejected = system.place("POSTER-01", poster + 1).await;
    assert_eq!(system.settled(&rejected).await["status"], "REJECTED");
    let cancelled = system.place("MUG-01", 1).await;
    assert_eq!(system.settled(&cancelled).await["status"], "CONFIRMED");
    assert_eq!(system.cancel(&cancelled).await.status(), 202);
    assert_eq!(system.settled(&cancelled).await["status"], "CANCELLED");

    for (id, words) in [(&rejected, "rejected"), (&cancelled, "cancelled")] {
        let response = system.ship(id, "k").await;
        assert_eq!(response.status(), 409, "order {id}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"], "not_shippable");
        assert!(body["message"].as_str().expect("message").contains(words), "{body}");
    }
    assert_eq!(system.ship(&uuid::Uuid::now_v7().to_string(), "k").await.status(), 404);

    let confirmed = system.place("MUG-01", 1).await;
    assert_eq!(system.settled(&confirmed).await["status"], "CONFIRMED");
    let url = format!("{}/orders/{confirmed}/ship", system.order_url);
    let client = reqwest::Client::new();
    // A customer's token (even the order's own customer) does not grant shipping.
    let as_customer = client
        .post(&url)
        .bearer_auth(system.keys.token(e2e::TEST_CUSTOMER))
        .header("Idempotency-Key", "k")
        .send()
        .await
        .expect("answers");
    assert_eq!(as_customer.status(), 403);
    let challenge = as_customer.headers()["www-authenticate"].to_str().expect("ascii").to_owned();
    assert!(challenge.contains(r#"error="insufficient_scope""#) && challenge.contains("orders:ship"), "{challenge}");
    assert_eq!(client.post(&url).header("Idempotency-Key", "k").send().await.expect("answers").status(), 401);
    let keyless = client.post(&url).bearer_auth(system.keys.operator_token("packer-1")).send().await.expect("answers");
    assert_eq!(keyless.status(), 400);
    assert_eq!(system.order(&confirmed).await["status"], "CONFIRMED", "none of that moved the order");

    system.assert_books_balance().await;
    system.stop().await;
}

#[tokio::test]
async fn a_ship_reply_lost_after_commit_is_recovered_by_retrying_with_the_same_key() {
    let system = TestSystem::start().await;
    let id = system.place("KEYBOARD-01", 1).await;
    assert_eq!(system.settled(&id).await["status"], "CONFIRMED");
    let (_, on_hand, _) = system.stock_levels("KEYBOARD-01").await;
    let _armed = system.arm("order.ship.after_commit_before_reply", "1*error");

    assert_eq!(system.ship(&id, "lost").await.status(), 500, "the operator does not know what happened");
    let retry = system.ship(&id, "lost").await;
    assert!(matches!(retry.status().as_u16(), 200 | 202));
    assert_eq!(retry.headers().get("idempotent-replayed").map(|v| v.as_bytes()), Some(&b"true"[..]));
    assert_eq!(system.settled(&id).await["status"], "SHIPPED");
    assert_eq!(system.stock_levels("KEYBOARD-01").await.1, on_hand - 1, "shipped once");
    system.assert_books_balance().await;
    system.stop().await;
}

#[tokio::test]
async fn a_shipment_whose_acknowledgement_fails_is_applied_once() {
    let system = TestSystem::start().await;
    let id = system.place("CABLE-01", 3).await;
    assert_eq!(system.settled(&id).await["status"], "CONFIRMED");
    let (_, on_hand, _) = system.stock_levels("CABLE-01").await;
    let _armed = system.arm("inventory.ship.after_commit_before_ack", "2*error");

    system.ship(&id, "k").await;

    assert_eq!(system.settled(&id).await["status"], "SHIPPED");
    e2e::eventually("two redeliveries", || system.inventory_consumer.duplicates() == 2).await;
    assert_eq!(system.stock_levels("CABLE-01").await.1, on_hand - 3);
    system.assert_books_balance().await;
    system.stop().await;
}

#[tokio::test]
async fn a_ship_request_for_an_order_inventory_holds_nothing_for_moves_no_stock() {
    // A forged (or misrouted) OrderReadyToShip for a rejected order: inventory refuses it,
    // saying what it holds; the order service, which did not ask, changes nothing.
    let system = TestSystem::start().await;
    let poster = system.stock_levels("POSTER-01").await;
    let id = system.place("POSTER-01", poster.0 + 1).await;
    assert_eq!(system.settled(&id).await["status"], "REJECTED");

    let order_id = schema::OrderId(uuid::Uuid::parse_str(&id).expect("uuid"));
    let trace = schema::envelope::Trace { correlation_id: "forged".into(), traceparent: None };
    let forged = serde_json::to_vec(&Envelope::new(OrderReadyToShip { order_id }, &trace)).expect("serialises");
    kafka::publish_raw(system.producer(), &system.topics.orders, &id, &forged).await;
    e2e::eventually("the forged request handled", || system.order_consumer.processed() >= 2).await;

    assert_eq!(system.order(&id).await["status"], "REJECTED");
    assert_eq!(system.stock_levels("POSTER-01").await, poster);
    system.assert_books_balance().await;
    system.stop().await;
}

#[tokio::test]
async fn an_order_being_shipped_can_no_longer_be_cancelled() {
    let system = TestSystem::start_with(Options {
        admin_token: Some("admin-token-of-the-shipping-test".into()),
        ..Options::default()
    })
    .await;
    let id = system.place("MOUSE-01", 1).await;
    assert_eq!(system.settled(&id).await["status"], "CONFIRMED");
    let admin = |action: &str| {
        e2e::http_client(Duration::from_secs(60))
            .post(format!("{}/admin/consumer/{action}", system.inventory_url))
            .bearer_auth("admin-token-of-the-shipping-test")
            .send()
    };
    // Inventory does not take the stock out while its consumer is paused: the order stays SHIPPING.
    assert_eq!(admin("pause").await.expect("answers").status(), 200);
    let shipping = system
        .http
        .post(format!("{}/orders/{id}/ship", system.order_url))
        .bearer_auth(system.keys.operator_token("packer-1"))
        .header("Idempotency-Key", "k")
        .header("Prefer", "wait=0")
        .send()
        .await
        .expect("answers");
    assert_eq!(shipping.status(), 202);
    assert_eq!(shipping.json::<Value>().await.expect("json")["status"], "SHIPPING");

    let cancel = system.cancel(&id).await;
    assert_eq!(cancel.status(), 409);
    let body: Value = cancel.json().await.expect("json");
    assert!(body["message"].as_str().expect("message").contains("shipping has started"), "{body}");

    assert_eq!(admin("resume").await.expect("answers").status(), 200);
    assert_eq!(system.settled(&id).await["status"], "SHIPPED");
    system.assert_books_balance().await;
    system.stop().await;
}
