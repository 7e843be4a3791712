//! The compose stack's alert rules, evaluated by a real Prometheus scraping a real system:
//! with the gremlin making inventory slow, `OrderApiSlow` fires; with it off again, the alert
//! resolves once the slow orders leave its 30 s window.

use std::time::Duration;

use e2e::prometheus::TestPrometheus;
use e2e::{Options, TestSystem};
use inventory::gremlin::Pattern;
use serde_json::json;

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port")
}

/// Keeps placing orders (each waits for its outcome, up to the budget) until `done`.
async fn place_until(system: &TestSystem, what: &str, done: impl AsyncFn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let body = json!({"lines": [{"sku": "CABLE-01", "quantity": 1}]});
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "{what} did not happen within 120 s");
        let placed = system.post_order(&uuid::Uuid::new_v4().to_string(), &body).await;
        assert!(placed.status().is_success(), "{}", placed.status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn order_api_slow_fires_in_prometheus_while_inventory_is_slow_and_resolves_after() {
    let system = TestSystem::start_with(Options::default()).await;
    let prometheus = TestPrometheus::start(
        &system.name,
        &[("order", port_of(&system.order_url)), ("inventory", port_of(&system.inventory_url))],
    )
    .await;
    let slow = || async { prometheus.alert("OrderApiSlow").await.as_deref() == Some("firing") };
    // Fast orders first: Prometheus sees their average, under the limit, and stays quiet.
    let average = || prometheus.value("order_api:request_duration_seconds:avg30s");
    place_until(&system, "an average of fast orders", async || average().await.is_some()).await;
    assert!(average().await.is_some_and(|seconds| seconds < 1.0), "{:?}", average().await);
    assert_eq!(prometheus.alert("OrderApiSlow").await, None);

    // Every order now waits 2.5 s in inventory: each POST takes its whole 2 s budget.
    system.gremlin.set(Pattern { enabled: true, one_in: 1, delay_ms: 2_500 });
    place_until(&system, "OrderApiSlow firing", slow).await;

    system.gremlin.set(Pattern::default());
    place_until(&system, "OrderApiSlow resolved", async || {
        tokio::time::sleep(Duration::from_millis(500)).await;
        prometheus.alert("OrderApiSlow").await.is_none()
    })
    .await;
    system.assert_books_balance().await;
    system.stop().await;
}
