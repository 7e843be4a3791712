//! Several instances of a service share its consumer group: the group coordinator splits the
//! partitions between them, and when one dies its partitions move to the survivors.

use std::collections::BTreeSet;
use std::time::Duration;

use e2e::processes::{Processes, Service};

/// The partitions `service` owns, as its `/health` reports them.
async fn partitions(system: &Processes, service: &Service) -> BTreeSet<String> {
    let Some((_, body)) = system.health(service).await else { return BTreeSet::new() };
    body["consumer"]["partitions"]
        .as_array()
        .map(|list| list.iter().filter_map(|p| p.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// Waits until `check` holds for the partitions of `services`, returning them.
async fn until_owned(
    system: &Processes,
    services: &[&Service],
    what: &str,
    check: impl Fn(&[BTreeSet<String>]) -> bool,
) -> Vec<BTreeSet<String>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut owned = Vec::new();
        for service in services {
            owned.push(partitions(system, service).await);
        }
        if check(&owned) {
            return owned;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: partitions owned {owned:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn two_inventory_instances_split_the_partitions_and_a_survivor_takes_over_a_killed_ones() {
    let mut system = Processes::prepare(None).await;
    system.start_all().await;
    let mut second = system.inventory.replica("inventory-2");
    second.start(&[]);
    system.wait_ready(&second).await;
    let all: BTreeSet<String> = (0..e2e::kafka::PARTITIONS).map(|p| format!("{}/{p}", system.topics.orders)).collect();

    let owned = until_owned(&system, &[&system.inventory, &second], "both instances own a share", |owned| {
        owned.iter().all(|o| !o.is_empty())
            && owned[0].is_disjoint(&owned[1])
            && owned[0].union(&owned[1]).cloned().collect::<BTreeSet<_>>() == all
    })
    .await;
    eprintln!("shared: first {:?}, second {:?}", owned[0], owned[1]);
    let before = system.stock("MUG-01").await;
    for i in 0..30 {
        system.place(&format!("shared-{i}"), "MUG-01", 1).await;
    }
    system.settle(Duration::from_secs(60)).await;

    // Kill one instance while orders keep coming: its partitions go to the other.
    let placing = async {
        for i in 0..40 {
            system.place(&format!("handover-{i}"), "MUG-01", 1).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let killing = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        second.kill();
    };
    futures::join!(placing, killing);
    until_owned(&system, &[&system.inventory], "the survivor owns every partition", |owned| owned[0] == all).await;

    let report = system.settle(Duration::from_secs(90)).await;
    assert_eq!(report.orders_by_status.get("CONFIRMED"), Some(&70), "every order confirmed, none stuck");
    assert_eq!(system.stock("MUG-01").await, before - 70, "each order deducted exactly once");
    system.stop().await;
}

/// When each partition changed hands in `log` (a service's JSON log): `(time, change, partition)`
/// for every partition named by a "consumer group rebalanced" line.
fn rebalances(log: &std::path::Path) -> Vec<(chrono::DateTime<chrono::Utc>, String, String)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut changes = Vec::new();
    for line in text.lines() {
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if entry["message"] != "consumer group rebalanced" {
            continue;
        }
        let at = entry["timestamp"].as_str().and_then(|t| t.parse().ok()).expect("a timestamp");
        let change = entry["change"].as_str().unwrap_or_default().to_owned();
        for partition in entry["moved"].as_str().unwrap_or_default().split(',').filter(|p| !p.is_empty()) {
            changes.push((at, change.clone(), partition.to_owned()));
        }
    }
    changes
}

/// An instance joins while the owner of the partitions it takes is still applying events of
/// them (the gremlin holds every placement 300 ms, so a dozen or so are in hand at any time):
/// the owner finishes them and commits their offsets before it lets the partitions go, so the
/// newcomer starts after them and never meets one again as a duplicate (decision 0027). Both
/// group protocols: they revoke differently.
#[tokio::test]
async fn a_joining_instance_starts_after_the_events_their_owner_holds() {
    for protocol in ["consumer", "classic"] {
        joining_starts_after_the_events_in_hand(protocol).await;
    }
}

async fn joining_starts_after_the_events_in_hand(protocol: &str) {
    let mut system = Processes::prepare(None).await;
    for (key, value) in [
        ("INVENTORY__KAFKA__GROUP_PROTOCOL", protocol),
        ("INVENTORY__GREMLIN__ENABLED", "true"),
        ("INVENTORY__GREMLIN__ONE_IN", "1"),
        ("INVENTORY__GREMLIN__DELAY_MS", "300"),
    ] {
        system.inventory.set_env(key, value);
    }
    system.start_all().await;
    let all: BTreeSet<String> = (0..e2e::kafka::PARTITIONS).map(|p| format!("{}/{p}", system.topics.orders)).collect();
    until_owned(&system, &[&system.inventory], "the first instance owns every partition", |owned| owned[0] == all)
        .await;
    let before = system.stock("MUG-01").await;
    let mut second = system.inventory.replica("inventory-2");

    // About 50 orders a second; the second instance joins a second in, and orders keep coming
    // until it owns its share and has applied some.
    const ORDERS: i64 = 250;
    let placing = async {
        for i in 0..ORDERS {
            system.place(&format!("join-{protocol}-{i}"), "MUG-01", 1).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let joining = async {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        second.start(&[]);
        system.wait_ready(&second).await;
        until_owned(&system, &[&system.inventory, &second], "both instances own a share", |owned| {
            owned.iter().all(|o| !o.is_empty())
        })
        .await;
    };
    futures::join!(placing, joining);
    let report = system.settle(Duration::from_secs(90)).await;
    assert_eq!(report.orders_by_status.get("CONFIRMED"), Some(&ORDERS), "every order confirmed, none stuck");
    assert_eq!(system.stock("MUG-01").await, before - ORDERS, "each order deducted exactly once");

    let mut counts = Vec::new();
    for service in [&system.inventory, &second] {
        let (_, body) = system.health(service).await.expect("health answers");
        counts.push((body["consumer"]["processed"].as_u64(), body["consumer"]["duplicates"].as_u64()));
    }
    eprintln!("{protocol}: (processed, duplicates) of the first and the joining instance: {counts:?}");
    assert!(counts[1].0.is_some_and(|n| n > 0), "the joining instance applied nothing: {counts:?}");
    assert!(
        counts.iter().all(|(_, duplicates)| *duplicates == Some(0)),
        "{protocol}: an event was applied by one instance and met again by the other: {counts:?}; logs in {}",
        system.logs.display()
    );
    system.stop().await;
}

/// Kafka's classic group protocol (the default), the leaving instance a static member with a
/// stable group instance id, as supervisord and StatefulSets give: Kafka keeps a static
/// member's partitions for it when it merely closes, unless it leaves (decision 0027).
#[tokio::test]
async fn a_gracefully_stopped_static_member_hands_its_partitions_over_within_a_second_under_load() {
    graceful_stop_hands_over("classic", true).await;
}

/// Kafka 4's consumer protocol (KIP-848), the leaving instance without an instance id, as the
/// pods of an autoscaled Deployment run (deploy/, decision 0027).
#[tokio::test]
async fn a_gracefully_stopped_instance_on_the_consumer_protocol_hands_its_partitions_over_within_a_second() {
    graceful_stop_hands_over("consumer", false).await;
}

async fn graceful_stop_hands_over(protocol: &str, static_member: bool) {
    let mut system = Processes::prepare(None).await;
    system.inventory.set_env("INVENTORY__KAFKA__GROUP_PROTOCOL", protocol);
    system.start_all().await;
    let mut second = system.inventory.replica("inventory-2");
    let instance_id = if static_member { format!("{}-inventory-2", system.name) } else { String::new() };
    second.start(&[("INVENTORY__KAFKA__INSTANCE_ID", &instance_id)]);
    system.wait_ready(&second).await;
    let all: BTreeSet<String> = (0..e2e::kafka::PARTITIONS).map(|p| format!("{}/{p}", system.topics.orders)).collect();
    until_owned(&system, &[&system.inventory, &second], "both instances own a share", |owned| {
        owned.iter().all(|o| !o.is_empty()) && owned[0].union(&owned[1]).cloned().collect::<BTreeSet<_>>() == all
    })
    .await;
    let before = system.stock("MUG-01").await;

    // Orders keep coming (about 50 a second) while the second instance is stopped by SIGTERM.
    const ORDERS: i64 = 150;
    let placing = async {
        for i in 0..ORDERS {
            system.place(&format!("scale-in-{i}"), "MUG-01", 1).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let stopping = async {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let stopped_at = chrono::Utc::now();
        assert!(second.terminate(Duration::from_secs(15)).await, "the second instance stops cleanly");
        stopped_at
    };
    let ((), stopped_at) = futures::join!(placing, stopping);
    until_owned(&system, &[&system.inventory], "the survivor owns every partition", |owned| owned[0] == all).await;
    let report = system.settle(Duration::from_secs(90)).await;
    assert_eq!(report.orders_by_status.get("CONFIRMED"), Some(&ORDERS), "every order confirmed, none stuck");
    assert_eq!(system.stock("MUG-01").await, before - ORDERS, "each order deducted exactly once");

    // How long each partition the stopping instance gave up had no owner: from its revocation
    // (in the stopping instance's log) to its assignment to the survivor (in the survivor's).
    let given_up: Vec<_> = rebalances(second.log_file())
        .into_iter()
        .filter(|(at, change, _)| change == "revoked" && *at >= stopped_at)
        .collect();
    let taken = rebalances(system.inventory.log_file());
    assert!(!given_up.is_empty(), "the stopping instance revoked its partitions; see {}", second.log_file().display());
    let mut gaps = Vec::new();
    for (revoked_at, _, partition) in &given_up {
        let assigned_at = taken
            .iter()
            .filter(|(at, change, p)| change == "assigned" && p == partition && at >= revoked_at)
            .map(|(at, _, _)| *at)
            .min()
            .unwrap_or_else(|| panic!("{partition} was never assigned to the survivor after {revoked_at}"));
        gaps.push((partition.clone(), (assigned_at - *revoked_at).num_milliseconds()));
    }
    eprintln!("partitions without an owner after the graceful stop (ms): {gaps:?}");
    assert!(
        gaps.iter().all(|(_, ms)| *ms <= 1000),
        "a partition stayed without an owner for more than 1 s: {gaps:?}; logs in {}",
        system.logs.display()
    );
    system.stop().await;
}
