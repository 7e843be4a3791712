use std::time::{Duration, Instant};

use e2e::processes::{Broker, Processes};
use serde_json::json;

#[tokio::test]
async fn services_started_before_the_broker_become_useful_when_it_arrives() {
    let mut broker = Broker::new(std::env::temp_dir().join(format!("broker-{}", uuid::Uuid::new_v4().simple())));
    let mut system = Processes::prepare(Some(broker.address.clone())).await;
    system.relay.start(&[]);
    system.inventory.start(&[]);
    system.order.start(&[]);
    // Order is ready without the broker (degraded): orders wait in its outbox. Inventory,
    // whose work is consuming, is not ready until the broker is there.
    system.ready(&["order"]).await;
    let id = system.place("early", "MUG-01", 1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    broker.start().await;
    system.create_topics().await;
    system.ready(&["inventory"]).await;

    let report = system.settle(Duration::from_secs(90)).await;
    assert_eq!(report.orders_by_status.get("CONFIRMED"), Some(&1), "{id} confirmed once the broker came");
    system.stop().await;
}

#[tokio::test]
async fn with_the_broker_down_orders_are_answered_within_budget_and_drain_when_it_returns() {
    let mut broker = Broker::new(std::env::temp_dir().join(format!("broker-{}", uuid::Uuid::new_v4().simple())));
    broker.start().await;
    let mut system = Processes::prepare(Some(broker.address.clone())).await;
    system.start_all().await;
    system.place("warm-up", "MUG-01", 1).await;
    system.settle(Duration::from_secs(60)).await;

    broker.kill();
    let body = json!({"lines": [{"sku": "CABLE-01", "quantity": 1}]});
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let started = Instant::now();
        let (status, _) = system.post(&format!("outage-{i}"), &body, "1").await.expect("order answers");
        slowest = slowest.max(started.elapsed());
        assert_eq!(status, 202, "accepted, pending while the broker is away");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(slowest < Duration::from_millis(1_250), "within the 1 s budget plus margin: {slowest:?}");

    let back = Instant::now();
    broker.start().await;
    let report = system.settle(Duration::from_secs(120)).await;
    eprintln!("backlog drained {:?} after the broker returned", back.elapsed());
    assert_eq!(report.orders_by_status.get("CONFIRMED"), Some(&21));
    system.stop().await;
}
