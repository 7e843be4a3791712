//! The database host is lost (issue 34, decision 0031): the order and inventory databases
//! live on a primary with a synchronous standby, the services and relays reach them through
//! a multi-host URL (`target_session_attrs=read-write`), and the primary crashes; the
//! standby is promoted. Without a restart, the services follow the new primary: orders are
//! taken again, every one becomes final, none that was acknowledged before the crash is
//! missing from the promoted databases, and the books balance there.

use std::time::Duration;

use e2e::replicated::ReplicatedPostgres;
use e2e::{Options, TestSystem};
use serde_json::json;

/// Places an order for `sku`, sending the same request again (same key) while the service
/// answers 503 — as a careful client does while there is no primary — for up to 60 s.
async fn place_through(system: &TestSystem, sku: &str) -> String {
    let key = uuid::Uuid::new_v4().to_string();
    let body = json!({"lines": [{"sku": sku, "quantity": 1}]});
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let response = system.post_order(&key, &body).await;
        let status = response.status().as_u16();
        if status == 201 || status == 202 {
            let order: serde_json::Value = response.json().await.expect("json");
            return order["id"].as_str().expect("id").to_owned();
        }
        assert_eq!(status, 503, "while the database fails over, an order is refused with 503 or taken");
        assert!(tokio::time::Instant::now() < deadline, "no order was taken within 60 s of the failover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_services_follow_the_promoted_standby_and_lose_no_acknowledged_order() {
    e2e::init_telemetry();
    let (name, postgres) = ReplicatedPostgres::for_test().await;
    let urls = [format!("{name}_orders"), format!("{name}_inventory")].map(|db| {
        postgres.create_database(&db);
        postgres.url(&db)
    });
    let system = TestSystem::start_with(Options { database_urls: Some(urls), ..Options::default() }).await;

    let mut acknowledged = Vec::new();
    for _ in 0..10 {
        acknowledged.push(place_through(&system, "MUG-01").await);
    }
    for id in &acknowledged {
        assert_eq!(system.settled(id).await["status"], "CONFIRMED");
    }

    // The primary's host is lost; the manager promotes the standby. (pg_ctl blocks this
    // test's thread, and the services on it, for the second it takes: a slower failover.)
    postgres.fail_over();

    // The same processes take orders again, on the new primary, and finish them.
    let mut after = Vec::new();
    for _ in 0..10 {
        after.push(place_through(&system, "MUG-01").await);
    }
    for id in after.iter().chain(&acknowledged) {
        assert_eq!(system.settled(id).await["status"], "CONFIRMED", "order {id} on the promoted database");
    }
    // /health says which node the service writes to now (reused for up to a second).
    let expected = format!("127.0.0.1:{}", postgres.standby_port);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let health: serde_json::Value = system
            .http
            .get(format!("{}/health", system.order_url))
            .send()
            .await
            .expect("health")
            .json()
            .await
            .expect("json");
        if health["checks"]["order database"]["server"] == expected.as_str() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "/health names the promoted node, {expected}: {health}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    system.assert_books_balance().await;
    system.stop().await;
    drop(postgres);
}
