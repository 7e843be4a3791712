//! `/health` says what is wrong in plain words, and services wait for their dependencies.

use std::time::Duration;

use diesel_async::RunQueryDsl as _;
use e2e::TestSystem;
use serde_json::Value;

#[tokio::test]
async fn a_service_started_before_its_database_exists_says_why_and_becomes_ready_when_it_arrives() {
    e2e::init_telemetry();
    let server = e2e::pg_server_url();
    let name = format!("{}_orders", e2e::unique_name("t"));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut settings: order::configuration::Settings = e2e::local_settings();
    settings.common.http = platform::config::HttpSettings::on_port(0);
    settings.common.database = platform::config::DatabaseSettings::at(format!("{server}/{name}"));
    settings.common.consumer_group = format!("{name}-group");
    settings.own.wait_budget_ms = 0;
    let keys = e2e::TestKeys::new(&name);
    settings.own.auth.public_key_file = Some(keys.public_key_file.clone());
    let app = order::startup::Application::build(settings, shutdown.clone()).await.expect("builds");
    let base = format!("http://127.0.0.1:{}", app.port());
    let running = tokio::spawn(app.run_until_stopped());
    let http = keys.client(e2e::TEST_CUSTOMER, Duration::from_secs(10));

    // Answers at once, "starting"; after the first failed attempt, says what is wrong.
    let expected = format!("database \"{name}\" does not exist");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let response = http.get(format!("{base}/health")).send().await.expect("answers while waiting");
        assert_eq!(response.status(), 503);
        let body: Value = response.json().await.expect("json");
        let message = body["checks"]["order database"]["message"].as_str().unwrap_or_default().to_owned();
        if message.contains(&expected) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = http.get(format!("{base}/orders")).send().await.expect("answers");
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    // The database's own words are for /health and the log, not for a client.
    let body = refused.text().await.expect("body");
    assert!(!body.contains(&name) && !body.contains("does not exist"), "{body}");

    let mut admin = TestSystem::connect(&format!("{server}/postgres")).await;
    diesel::sql_query(format!("CREATE DATABASE \"{name}\"")).execute(&mut admin).await.expect("created");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !http.get(format!("{base}/health")).send().await.is_ok_and(|r| r.status() == 200) {
        assert!(tokio::time::Instant::now() < deadline, "never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(http.get(format!("{base}/orders")).send().await.expect("answers").status(), 200);

    shutdown.cancel();
    running.await.expect("joined").expect("stopped cleanly");
    diesel::sql_query(format!("DROP DATABASE \"{name}\" WITH (FORCE)")).execute(&mut admin).await.expect("dropped");
}

#[tokio::test]
async fn health_names_a_missing_table() {
    let system = TestSystem::start().await;
    let mut conn = TestSystem::connect(&system.inventory_db).await;
    diesel::sql_query("ALTER TABLE products RENAME TO products_gone").execute(&mut conn).await.expect("renamed");
    // A check's result is reused for a second (a flood of /health costs the database one
    // probe a second); the start-up's own check said "up" just now.
    tokio::time::sleep(platform::health::REUSE_FOR).await;

    let response = system.http.get(format!("{}/health", system.inventory_url)).send().await.expect("answers");

    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        body["checks"]["inventory database"]["message"],
        "inventory database: relation \"products\" does not exist"
    );
    diesel::sql_query("ALTER TABLE products_gone RENAME TO products").execute(&mut conn).await.expect("renamed back");
    system.stop().await;
}

#[tokio::test]
async fn with_the_broker_down_order_is_degraded_and_inventory_not_ready_both_saying_why() {
    let system = TestSystem::start().await;
    let dead = platform::config::KafkaSettings { brokers: "127.0.0.1:1".into(), ..e2e::kafka_settings() };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut order: order::configuration::Settings = e2e::local_settings();
    order.common.http = platform::config::HttpSettings::on_port(0);
    order.common.database = platform::config::DatabaseSettings::at(&system.order_db);
    order.common.kafka = dead.clone();
    order.common.topics = system.topics.clone();
    order.common.consumer_group = "health-test".into();
    order.own.auth.public_key_file = Some(system.keys.public_key_file.clone());
    let order = order::startup::Application::build(order, shutdown.clone()).await.expect("builds");
    let mut inventory: inventory::configuration::Settings = e2e::local_settings();
    inventory.common.http = platform::config::HttpSettings::on_port(0);
    inventory.common.database = platform::config::DatabaseSettings::at(&system.inventory_db);
    inventory.common.kafka = dead;
    inventory.common.topics = system.topics.clone();
    inventory.common.consumer_group = "health-test".into();
    let inventory = inventory::startup::Application::build(inventory, shutdown.clone()).await.expect("builds");
    let (order_url, inventory_url) =
        (format!("http://127.0.0.1:{}/health", order.port()), format!("http://127.0.0.1:{}/health", inventory.port()));
    let running = [tokio::spawn(order.run_until_stopped()), tokio::spawn(inventory.run_until_stopped())];

    let health = |url: String| {
        let http = system.http.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                let response = http.get(&url).send().await.expect("answers");
                let status = response.status().as_u16();
                let body: Value = response.json().await.expect("json");
                let database_up = body["checks"]
                    .as_object()
                    .is_some_and(|c| c.iter().any(|(name, c)| name.ends_with(" database") && c["status"] == "up"));
                if body["checks"]["kafka"]["status"] == "down" && database_up {
                    return (status, body);
                }
                assert!(tokio::time::Instant::now() < deadline, "{body}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let (status, body) = health(order_url).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("degraded")), "order keeps taking orders: {body}");
    let message = body["checks"]["kafka"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("kafka: "), "{message}");
    let (status, body) = health(inventory_url).await;
    assert_eq!((status, body["status"].as_str()), (503, Some("down")), "{body}");

    shutdown.cancel();
    for service in running {
        let _ = service.await;
    }
    system.stop().await;
}
