//! Two relay processes share each outbox's lanes; when one is SIGKILLed, its database
//! sessions close and the other takes its lanes (decision 0020).

use std::time::Duration;

use e2e::processes::{Processes, Service};

/// Lanes of `outbox` that `service` publishes, as its `/health` reports them.
async fn lanes(system: &Processes, service: &Service, outbox: &str) -> i64 {
    let Some((_, body)) = system.health(service).await else { return -1 };
    body["outboxes"][outbox]["lanes_held"].as_i64().unwrap_or(-1)
}

/// Waits until each of `services` publishes `expected` lanes of both outboxes.
async fn until_lanes(system: &Processes, services: &[&Service], expected: i64, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut held = Vec::new();
        for service in services {
            for outbox in ["order", "inventory"] {
                held.push(lanes(system, service, outbox).await);
            }
        }
        if held.iter().all(|&h| h == expected) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: lanes held {held:?}, expected {expected} each");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Events this relay process published from the order outbox.
async fn published(system: &Processes, service: &Service) -> u64 {
    let Some((_, body)) = system.health(service).await else { return 0 };
    body["outboxes"]["order"]["published"].as_u64().unwrap_or(0)
}

/// How many times `service`'s batches of the order outbox went through each stage (read,
/// delivery, delete), from its `/metrics`.
async fn stages(system: &Processes, service: &Service) -> Vec<u64> {
    let metrics = system.http.get(format!("{}/metrics", service.url())).send().await.expect("answers");
    let text = metrics.text().await.expect("text");
    ["read", "delivery", "delete"]
        .iter()
        .map(|stage| {
            let series = format!("relay_batch_stage_seconds_count{{outbox=\"order\",stage=\"{stage}\"}} ");
            text.lines().find_map(|line| line.strip_prefix(&series)).and_then(|n| n.parse().ok()).unwrap_or(0)
        })
        .collect()
}

#[tokio::test]
async fn two_relay_processes_share_the_lanes_and_a_survivor_takes_a_sigkilled_ones_lanes() {
    let mut system = Processes::prepare(None).await;
    system.start_all().await;
    let mut second = system.relay.replica("relay-2");
    second.start(&[]);
    system.wait_ready(&second).await;
    until_lanes(&system, &[&system.relay, &second], 4, "two relays share eight lanes").await;

    let before = system.stock("MUG-01").await;
    for i in 0..30 {
        system.place(&format!("lanes-{i}"), "MUG-01", 1).await;
    }
    system.settle(Duration::from_secs(60)).await;
    let (first_count, second_count) = (published(&system, &system.relay).await, published(&system, &second).await);
    assert!(first_count > 0 && second_count > 0, "both relays published: {first_count} and {second_count}");
    assert_eq!(first_count + second_count, 30, "each placement published once");
    for relay in [&system.relay, &second] {
        let counted = stages(&system, relay).await;
        assert!(counted.iter().all(|&n| n > 0), "each relay timed its reads, deliveries and deletes: {counted:?}");
    }

    second.kill();
    until_lanes(&system, &[&system.relay], 8, "the survivor publishes every lane").await;
    for i in 0..30 {
        system.place(&format!("after-{i}"), "MUG-01", 1).await;
    }
    let report = system.settle(Duration::from_secs(60)).await;
    assert_eq!(report.orders_by_status.get("CONFIRMED"), Some(&60), "every order confirmed, none stuck");
    assert_eq!(system.stock("MUG-01").await, before - 60, "each order deducted exactly once");
    system.stop().await;
}
