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

/// Checks, for `period`, that each of `services` keeps publishing `expected` lanes of both
/// outboxes.
async fn keeps_lanes(system: &Processes, services: &[&Service], expected: i64, period: Duration, what: &str) {
    let until = tokio::time::Instant::now() + period;
    while tokio::time::Instant::now() < until {
        for service in services {
            for outbox in ["order", "inventory"] {
                let held = lanes(system, service, outbox).await;
                assert_eq!(held, expected, "{what}: {outbox} lanes held {held}, expected {expected}");
            }
        }
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
    ["read", "delivery", "position"]
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
        assert!(
            counted.iter().all(|&n| n > 0),
            "each relay timed its reads, deliveries and position writes: {counted:?}"
        );
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

/// Every lane's (owner, epoch, `done` snapshot's xmax) in the order database, as the relays
/// wrote them.
async fn lane_rows(url: &str) -> Vec<(i16, Option<i64>, i64, u64)> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::SmallInt)]
        lane: i16,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
        owner: Option<i64>,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        epoch: i64,
        #[diesel(sql_type = diesel::sql_types::Text)]
        done_xmax: String,
    }
    let mut conn = e2e::TestSystem::connect(url).await;
    let rows: Vec<Row> = diesel_async::RunQueryDsl::load(
        diesel::sql_query(
            "SELECT lane, owner, epoch, pg_snapshot_xmax(done)::text AS done_xmax FROM outbox_lanes ORDER BY lane",
        ),
        &mut conn,
    )
    .await
    .expect("lanes");
    rows.into_iter().map(|r| (r.lane, r.owner, r.epoch, r.done_xmax.parse().expect("xid"))).collect()
}

/// Fencing (decision 0026): a relay that hangs loses its lanes when its leases run out, and
/// once it goes on it neither moves a lane it lost nor publishes it: orders placed after it
/// woke up reach the topic once each, and no lane's position ever goes back.
#[tokio::test]
async fn a_paused_relay_loses_its_lanes_and_once_resumed_neither_moves_nor_publishes_them() {
    let mut system = Processes::prepare(None).await;
    system.start_all().await;
    let mut second = system.relay.replica("relay-2");
    second.start(&[]);
    system.wait_ready(&second).await;
    until_lanes(&system, &[&system.relay, &second], 4, "two relays share eight lanes").await;

    // Samples every lane's row until the end: positions must only ever move forward.
    let sampling = tokio_util::sync::CancellationToken::new();
    let sampler = {
        let (url, stop) = (system.order_db.clone(), sampling.clone());
        tokio::spawn(async move {
            let mut samples = Vec::new();
            while !stop.is_cancelled() {
                samples.push(lane_rows(&url).await);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            samples
        })
    };
    for i in 0..10 {
        system.place(&format!("before-{i}"), "MUG-01", 1).await;
    }
    system.settle(Duration::from_secs(60)).await;

    second.pause();
    let paused = std::time::Instant::now();
    until_lanes(&system, &[&system.relay], 8, "the live relay took the paused one's lanes").await;
    let taken_after = paused.elapsed();
    // A paused relay counts for nothing: the live one does not give lanes back for it (forty
    // looks at the lanes locally, and four leases).
    keeps_lanes(&system, &[&system.relay], 8, Duration::from_secs(8), "the live relay keeps every lane").await;
    for i in 0..10 {
        system.place(&format!("paused-{i}"), "MUG-01", 1).await;
    }
    system.settle(Duration::from_secs(60)).await;

    second.resume();
    let mut after = Vec::new();
    for i in 0..10 {
        after.push(system.place(&format!("resumed-{i}"), "MUG-01", 1).await);
    }
    let report = system.settle(Duration::from_secs(60)).await;
    assert_eq!(report.orders_by_status.get("CONFIRMED"), Some(&30), "every order confirmed, none stuck");
    until_lanes(&system, &[&system.relay, &second], 4, "the resumed relay took its share again").await;
    sampling.cancel();
    let samples = sampler.await.expect("sampler");

    for pair in samples.windows(2) {
        for (before, now) in pair[0].iter().zip(&pair[1]) {
            assert!(now.2 >= before.2, "lane {}'s epoch went back: {before:?} then {now:?}", now.0);
            assert!(now.3 >= before.3, "lane {}'s position went back: {before:?} then {now:?}", now.0);
        }
    }
    let settings = platform::config::KafkaSettings { brokers: system.brokers.clone(), ..e2e::kafka_settings() };
    let messages =
        e2e::kafka::read_topic_until(&settings, &system.topics.orders, Duration::from_secs(30), |m| m.len() >= 30)
            .await;
    for id in &after {
        let copies = messages.iter().filter(|m| e2e::kafka::key(m) == *id).count();
        assert_eq!(copies, 1, "order {id}, placed after the paused relay woke up, was published {copies} times");
    }
    println!("the paused relay's lanes were taken over after {taken_after:?}");
    second.kill();
    system.stop().await;
}
