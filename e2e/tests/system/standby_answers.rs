//! Rule 1 of decision 0030, with the whole system on a real primary and synchronous standby:
//! an order is acknowledged only once the standby holds it. The failover manager has switched
//! synchronous replication off (the standby is down), so the order's commit returns without
//! the standby; the client is answered 503 `not_yet_durable` rather than 201/202 — a failover
//! now would take the order back — and nothing of it is published (rule 2). Once the standby
//! is back, the same request (same key) is answered with that order, which then completes.

use std::time::Duration;

use e2e::replicated::ReplicatedPostgres;
use e2e::{Options, TestSystem};
use serde_json::json;

#[tokio::test]
async fn an_order_is_acknowledged_only_once_the_standby_holds_it() {
    e2e::init_telemetry();
    let (name, postgres) = ReplicatedPostgres::for_test().await;
    let urls = [format!("{name}_orders"), format!("{name}_inventory")].map(|db| {
        postgres.create_database(&db);
        postgres.url(&db)
    });
    let options = Options { database_urls: Some(urls), sync_standbys: 1, ..Options::default() };
    let system = TestSystem::start_with(options).await;
    let body = json!({"lines": [{"sku": "MUG-01", "quantity": 1}]});

    // With the standby synchronous, an order goes through as ever.
    let response = system.post_order(&uuid::Uuid::new_v4().to_string(), &body).await;
    assert_eq!(response.status(), 201, "an order with the standby up is confirmed within the wait");

    // The standby goes down and the manager switches synchronous replication off.
    postgres.stop_standby();
    postgres.set_synchronous(false);
    let key = uuid::Uuid::new_v4().to_string();
    let response = system.post_order(&key, &body).await;
    assert_eq!(response.status(), 503, "an order only the primary holds was acknowledged");
    let reply: serde_json::Value = response.json().await.expect("json");
    assert_eq!(reply["error"], "not_yet_durable", "the client is told to send it again: {reply}");

    // The standby comes back: the same request is answered with the recorded order.
    postgres.start_standby();
    postgres.set_synchronous(true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let order = loop {
        let response = system.post_order(&key, &body).await;
        match response.status().as_u16() {
            201 | 202 => break response.json::<serde_json::Value>().await.expect("json"),
            503 => assert!(
                tokio::time::Instant::now() < deadline,
                "still not acknowledged 30 s after the standby came back"
            ),
            other => panic!("unexpected reply {other} to the same request"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let id = order["id"].as_str().expect("id");
    assert_eq!(system.settled(id).await["status"], "CONFIRMED", "the order completes once the standby holds it");
    system.stop().await;
}
