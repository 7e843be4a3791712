use std::time::Duration;

use e2e::processes::Processes;
use serde_json::json;

const CRASH: Duration = Duration::from_secs(30);
const SETTLE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn inventory_killed_after_commit_before_ack_three_times_ends_with_exact_stock() {
    let mut system = Processes::prepare(None).await;
    system.start_all().await;
    let before = system.stock("MUG-01").await;
    system.inventory.kill();
    for i in 0..5 {
        system.place(&format!("k{i}"), "MUG-01", 1).await;
    }

    for round in 1..=3 {
        system.inventory.start(&[("CRASH_POINTS", "inventory.after_commit_before_ack=abort")]);
        assert!(system.inventory.exited(CRASH).await, "inventory died at the crash point (round {round})");
    }
    system.inventory.start(&[]);

    let report = system.settle(SETTLE).await;
    assert_eq!(report.orders_by_status.get("CONFIRMED"), Some(&5));
    assert_eq!(system.stock("MUG-01").await, before - 5);
    system.stop().await;
}

#[tokio::test]
async fn inventory_killed_before_commit_applies_nothing_then_applies_once_after_restart() {
    let mut system = Processes::prepare(None).await;
    system.start_all().await;
    let before = system.stock("LAMP-01").await;
    system.inventory.kill();
    system.inventory.start(&[("CRASH_POINTS", "inventory.before_commit=abort")]);
    system.ready(&["inventory"]).await;

    system.place("once", "LAMP-01", 4).await;
    assert!(system.inventory.exited(CRASH).await, "inventory died before committing");
    assert_eq!(system.stock("LAMP-01").await, before, "nothing was applied");
    let pending = checker::check(&system.order_db, &system.inventory_db, 3600.0).await.expect("checker");
    assert_eq!(pending.orders_by_status.get("PENDING"), Some(&1));

    system.inventory.start(&[]);
    system.settle(SETTLE).await;
    assert_eq!(system.stock("LAMP-01").await, before - 4, "applied exactly once");
    system.stop().await;
}

#[tokio::test]
async fn order_killed_after_commit_before_reply_then_a_retry_with_the_same_key_gets_the_same_order() {
    let mut system = Processes::prepare(None).await;
    system.start_all().await;
    let before = system.stock("CABLE-01").await;
    system.order.kill();
    system.order.start(&[("CRASH_POINTS", "order.after_commit_before_reply=abort")]);
    system.ready(&["order"]).await;
    let body = json!({"lines": [{"sku": "CABLE-01", "quantity": 2}]});

    let lost = system.post("lost-reply-key", &body, "2").await;
    assert!(lost.is_err(), "the reply was lost with the process: {lost:?}");
    assert!(system.order.exited(CRASH).await);
    system.order.start(&[]);
    system.ready(&["order"]).await;
    let (status, order) = system.post("lost-reply-key", &body, "2").await.expect("answers after restart");

    assert!(matches!(status, 201 | 202), "{status} {order}");
    let report = system.settle(SETTLE).await;
    assert_eq!(report.orders(), 1, "the retry found the committed order");
    assert_eq!(system.stock("CABLE-01").await, before - 2);
    system.stop().await;
}

#[tokio::test]
async fn relay_killed_after_publish_before_position_republishes_and_nothing_applies_twice() {
    let mut system = Processes::prepare(None).await;
    system.start_all().await;
    let before = system.stock("MOUSE-01").await;
    system.relay.kill();
    let id = system.place("relay-crash", "MOUSE-01", 3).await;

    system.relay.start(&[("CRASH_POINTS", "relay.after_publish_before_position=abort")]);
    assert!(system.relay.exited(CRASH).await, "relay died between publish and delete");
    system.relay.start(&[]);

    system.settle(SETTLE).await;
    let settings = platform::config::KafkaSettings { brokers: system.brokers.clone(), ..e2e::kafka_settings() };
    let published =
        e2e::kafka::read_topic_until(&settings, &system.topics.orders, Duration::from_secs(10), |m| m.len() >= 2).await;
    assert!(published.iter().filter(|m| e2e::kafka::key(m) == id).count() >= 2, "OrderPlaced was published twice");
    assert_eq!(system.stock("MOUSE-01").await, before - 3, "and applied once");
    system.stop().await;
}

#[tokio::test]
async fn sigterm_under_load_loses_nothing() {
    let mut system = Processes::prepare(None).await;
    system.start_all().await;
    // Four clients post continuously, each retrying with the same key until it gets a 2xx,
    // as a real client would while the order service restarts.
    let url = format!("{}/orders", system.order.url());
    let stop = tokio_util::sync::CancellationToken::new();
    let clients: Vec<_> = (0..4)
        .map(|client| {
            let (url, stop) = (url.clone(), stop.clone());
            let http = system.keys.client(&format!("c{client}"), Duration::from_secs(5));
            tokio::spawn(async move {
                let mut accepted = 0;
                while !stop.is_cancelled() {
                    let key = format!("term-{client}-{accepted}");
                    let body = json!({"lines": [{"sku": "CABLE-01", "quantity": 1}]});
                    loop {
                        let sent = http
                            .post(&url)
                            .header("Idempotency-Key", &key)
                            .header("Prefer", "wait=0")
                            .json(&body)
                            .send()
                            .await;
                        if sent.is_ok_and(|r| r.status().is_success()) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    accepted += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                accepted
            })
        })
        .collect();

    for service in [&mut system.inventory, &mut system.relay, &mut system.order] {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(service.terminate(Duration::from_secs(15)).await, "{} exited cleanly on SIGTERM", service.name);
        service.start(&[]);
    }
    system.ready(&["order", "inventory"]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    let mut accepted = 0;
    for client in clients {
        accepted += client.await.expect("client finished");
    }

    let report = system.settle(SETTLE).await;
    assert!(accepted > 20, "the load was real ({accepted} orders)");
    assert_eq!(report.orders(), accepted as i64, "every accepted order is there, once");
    system.stop().await;
}
