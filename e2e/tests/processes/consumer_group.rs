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
