//! Rule 2 of decision 0030, on a real primary and synchronous standby: the relay publishes a
//! row only once the standby has flushed its commit. A commit the standby does not have (its
//! wait cut short, played by `synchronous_commit = local`, while the standby is down) stays
//! off Kafka, so that a failover now could not leave a ghost event behind; once the standby
//! is back and has caught up, the row is published.

use std::time::Duration;

use diesel_async::SimpleAsyncConnection as _;
use e2e::replicated::ReplicatedPostgres;
use e2e::{TestSystem, kafka};
use relay::relay::OutboxRelay;
use relay::settings::RelaySettings;
use tokio_util::sync::CancellationToken;

/// Writes one test event for `key` on `topic` in its own transaction; `local`: its commit does
/// not wait for the standby.
async fn write(url: &str, topic: &str, key: &str, local: bool) -> uuid::Uuid {
    let mut conn = TestSystem::connect(url).await;
    conn.batch_execute("BEGIN").await.expect("begin");
    if local {
        conn.batch_execute("SET LOCAL synchronous_commit = local").await.expect("set");
    }
    let written =
        e2e::outbox::write_test_event(&mut conn, topic, key, "standby-wait", serde_json::json!({ "key": key })).await;
    conn.batch_execute("COMMIT").await.expect("commit");
    written.event_id
}

/// The event ids of `messages`, from their bodies.
fn event_ids(messages: &[rdkafka::message::OwnedMessage]) -> Vec<uuid::Uuid> {
    messages
        .iter()
        .filter_map(|m| serde_json::from_slice::<serde_json::Value>(rdkafka::Message::payload(m)?).ok())
        .filter_map(|body| body["event_id"].as_str()?.parse().ok())
        .collect()
}

#[tokio::test]
async fn the_relay_publishes_only_what_the_synchronous_standby_holds() {
    e2e::init_telemetry();
    let (name, postgres) = ReplicatedPostgres::for_test().await;
    let url = postgres.create_database(&format!("{name}_orders"));
    platform::db::run_migrations(&url, vec![messaging::MIGRATIONS]).await.expect("migrations");
    let kafka = e2e::kafka_settings();
    let topic = format!("{name}.standby");
    kafka::create_topics(&kafka, &[&topic]).await;

    let settings = RelaySettings { sync_standbys: 1, sync_standby_wait_ms: 500, ..RelaySettings::default() };
    let relay = OutboxRelay::new("order", url.clone(), &kafka, settings).expect("relay");
    let stats = relay.stats();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(relay.run(shutdown.clone()));

    // With the standby up, a commit waits for it and is published at once.
    let replicated = write(&url, &topic, "a", false).await;
    let seen = kafka::read_topic(&kafka, &topic, 1, Duration::from_secs(20)).await;
    assert_eq!(event_ids(&seen), [replicated], "a replicated commit is published");

    // The standby goes away; a commit that did not wait for it is visible on the primary only.
    postgres.stop_standby();
    let unreplicated = write(&url, &topic, "b", true).await;
    let seen = kafka::read_topic(&kafka, &topic, 2, Duration::from_secs(5)).await;
    assert_eq!(event_ids(&seen), [replicated], "a commit the standby does not have was published: a ghost");
    assert!(stats.held_for_standby(), "the relay says it holds its rows for the standby");

    // The standby comes back and catches up: the row goes out.
    postgres.start_standby();
    let seen = kafka::read_topic(&kafka, &topic, 2, Duration::from_secs(30)).await;
    let mut published = event_ids(&seen);
    published.sort();
    assert_eq!(published, [replicated, unreplicated], "published once the standby has it");
    assert!(!stats.held_for_standby(), "no longer held");

    shutdown.cancel();
    running.await.expect("relay stops");
}
