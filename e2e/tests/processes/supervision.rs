//! A background task that dies takes its process down: the process exits non-zero (the
//! supervisor restarts it) instead of answering "healthy" while nothing is consumed.

use std::time::Duration;

use e2e::processes::Processes;

#[tokio::test]
async fn inventory_whose_consumer_dies_exits_non_zero_and_a_restart_applies_what_waited() {
    let mut system = Processes::prepare(None).await;
    system.start_all().await;
    let before = system.stock("MUG-01").await;
    system.inventory.kill();
    system.place("waits-1", "MUG-01", 1).await;
    system.place("waits-2", "MUG-01", 2).await;

    // The consume loop fails at its first turn, as a consumer task that died would.
    system.inventory.start(&[("CRASH_POINTS", "inbox.consume_loop=error")]);
    let status = system.inventory.exit_status(Duration::from_secs(60)).await;
    let status = status.expect("inventory exits when its consumer dies");
    assert!(!status.success(), "the exit is a failure, for the supervisor to see: {status}");

    system.inventory.start(&[]);
    let report = system.settle(Duration::from_secs(60)).await;
    assert_eq!(report.orders_by_status.get("CONFIRMED"), Some(&2));
    assert_eq!(system.stock("MUG-01").await, before - 3);
    system.stop().await;
}

/// A Kafka client that librdkafka declares dead (a fatal error: it would never consume again)
/// is replaced inside the running process: the HTTP side never blinks, and the new client
/// rejoins the group and applies what waited.
#[tokio::test]
async fn inventory_whose_kafka_client_dies_replaces_it_without_restarting() {
    let mut system = Processes::prepare(None).await;
    system.start_all().await;
    let before = system.stock("MUG-01").await;
    system.inventory.kill();
    system.place("waits-1", "MUG-01", 1).await;

    // The first turn of the consume loop receives a fatal error; later turns run as usual.
    system.inventory.start(&[("CRASH_POINTS", "inbox.fatal_error=1*error")]);
    system.wait_ready(&system.inventory).await;
    system.place("waits-2", "MUG-01", 2).await;
    let report = system.settle(Duration::from_secs(60)).await;
    assert_eq!(report.orders_by_status.get("CONFIRMED"), Some(&2));
    assert_eq!(system.stock("MUG-01").await, before - 3);

    assert!(!system.inventory.exited(Duration::from_millis(100)).await, "inventory kept running");
    let (_, health) = system.health(&system.inventory).await.expect("inventory answers /health");
    let consumer = &health["consumer"];
    assert_eq!(consumer["renewals"], 1, "one client replaced: {health}");
    let partitions = consumer["partitions"].as_array().map_or(0, Vec::len);
    assert!(partitions > 0, "the new client holds partitions: {health}");
    system.stop().await;
}
