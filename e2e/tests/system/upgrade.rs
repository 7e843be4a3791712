//! Upgrading a running system to the outbox and inbox logs (messaging migration 000010,
//! docs/runbook.md "Upgrading to the log"): the rows waiting in the old outbox are published,
//! none lost and in their order; the ids the old inbox remembers are still recognised; and
//! services and relays of the version before, still running during the rollout, write into
//! the logs through the old names while an old relay publishes nothing. And upgrading
//! inventory to stock levels (inventory migration 000007, "Upgrading to stock levels"): each
//! SKU's stock moves from its product row into its first level, and back on a revert.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use diesel::sql_types::{BigInt, Text, Uuid};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness};
use e2e::{TestDatabase, kafka};
use rdkafka::Message as _;

/// The last messaging migration before the logs.
const BEFORE_THE_LOG: &str = "20261129000009";

/// Applies `set`'s migrations up to and including `until` (all of them if `None`).
async fn migrate(url: &str, set: fn() -> EmbeddedMigrations, until: Option<&'static str>) {
    let conn = AsyncPgConnection::establish(url).await.expect("connection");
    tokio::task::spawn_blocking(move || {
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::from(conn);
        match until {
            None => drop(conn.run_pending_migrations(set()).expect("migrations")),
            Some(until) => loop {
                let version = conn.run_next_migration(set()).expect("a migration");
                if version.to_string() == until {
                    break;
                }
            },
        }
    })
    .await
    .expect("migrations ran");
}

#[derive(diesel::QueryableByName, Debug, PartialEq, Eq)]
struct Waiting {
    #[diesel(sql_type = Text)]
    message_key: String,
    #[diesel(sql_type = Text)]
    seq: String,
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

/// Writes event `seq` of `key` as the version before the log did: into `outbox`.
async fn write_as_before(conn: &mut AsyncPgConnection, topic: &str, key: &str, seq: usize) -> uuid::Uuid {
    let event_id = uuid::Uuid::now_v7();
    let envelope = serde_json::json!({ "event_id": event_id, "key": key, "seq": seq }).to_string();
    diesel::sql_query(
        "INSERT INTO outbox (event_id, topic, message_key, event_type, correlation_id, envelope)
         VALUES ($1, $2, $3, 'Test', 'upgrade', $4::jsonb)",
    )
    .bind::<Uuid, _>(event_id)
    .bind::<Text, _>(topic)
    .bind::<Text, _>(key)
    .bind::<Text, _>(envelope)
    .execute(conn)
    .await
    .expect("written as before");
    event_id
}

/// Records `event_id` as a consumer of the version before the log did; whether it was new.
async fn remember_as_before(conn: &mut AsyncPgConnection, event_id: uuid::Uuid) -> bool {
    let inserted = diesel::sql_query(
        "INSERT INTO inbox (event_id, event_type, topic, kafka_partition, kafka_offset)
         VALUES ($1, 'OrderPlaced', 'orders.events', 0, 0) ON CONFLICT DO NOTHING",
    )
    .bind::<Uuid, _>(event_id)
    .execute(conn)
    .await
    .expect("remembered as before");
    inserted == 1
}

#[tokio::test]
async fn an_outbox_with_waiting_rows_moves_to_the_log_in_order_and_the_version_before_keeps_working_meanwhile() {
    e2e::init_telemetry();
    let name = e2e::unique_name("u");
    let database = TestDatabase::create(&e2e::pg_server_url(), &format!("{name}_orders")).await;
    let topic = format!("{name}.upgrade");
    let settings = e2e::kafka_settings();
    kafka::create_topics(&settings, &[&topic]).await;

    // The database as the version before the log left it, with rows waiting: three events
    // for each of ten keys, the first five of them already published (deleted, the old way).
    migrate(&database.url, || messaging::MIGRATIONS, Some(BEFORE_THE_LOG)).await;
    let mut conn = AsyncPgConnection::establish(&database.url).await.expect("connection");
    let mut waiting = Vec::new();
    for seq in 0..3 {
        for key in 0..10 {
            waiting.push((write_as_before(&mut conn, &topic, &format!("k{key}"), seq).await, key, seq));
        }
    }
    diesel::sql_query("DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT 5)")
        .execute(&mut conn)
        .await
        .expect("published the old way");
    let waiting = waiting.split_off(5);
    let remembered = uuid::Uuid::now_v7();
    assert!(remember_as_before(&mut conn, remembered).await);

    migrate(&database.url, || messaging::MIGRATIONS, None).await;
    migrate(&database.url, || <order::startup::OrderService as messaging::service::ConsumingService>::MIGRATIONS, None)
        .await;

    // Every waiting row is in the log, in the order the old outbox had them.
    let moved: Vec<Waiting> =
        diesel::sql_query("SELECT message_key, envelope->>'seq' AS seq FROM outbox_log ORDER BY id")
            .load(&mut conn)
            .await
            .expect("log");
    let expected: Vec<Waiting> =
        waiting.iter().map(|(_, key, seq)| Waiting { message_key: format!("k{key}"), seq: seq.to_string() }).collect();
    assert_eq!(moved, expected, "the waiting rows, in their order");

    // The version before, still running: its writes land in the log...
    let late_write = write_as_before(&mut conn, &topic, "k0", 3).await;
    // ...its relay finds nothing to publish and deletes nothing...
    let old_read: Count =
        diesel::sql_query("SELECT count(*) AS count FROM (SELECT id FROM outbox ORDER BY id LIMIT 500) r")
            .get_result(&mut conn)
            .await
            .expect("old read");
    assert_eq!(old_read.count, 0, "an old relay reads nothing");
    let deleted = diesel::sql_query("DELETE FROM outbox WHERE id > 0").execute(&mut conn).await.expect("old delete");
    assert_eq!(deleted, 0, "and deletes nothing");
    // ...and its consumers recognise what the old inbox remembered, and remember new ids.
    assert!(!remember_as_before(&mut conn, remembered).await, "an id the old inbox had is recognised");
    let new_id = uuid::Uuid::now_v7();
    assert!(remember_as_before(&mut conn, new_id).await);
    assert!(!remember_as_before(&mut conn, new_id).await);
    let in_log: Count =
        diesel::sql_query("SELECT count(*) AS count FROM inbox_log WHERE event_id = $1 AND slot = inbox_slot($1)")
            .bind::<Uuid, _>(new_id)
            .get_result(&mut conn)
            .await
            .expect("inbox log");
    assert_eq!(in_log.count, 1, "an old consumer's id lands in the inbox log, in its day's partition");

    // A relay of the new version publishes all of it, each key in order.
    let shutdown = tokio_util::sync::CancellationToken::new();
    let relay =
        relay::relay::OutboxRelay::new("order", &database.url, &settings, e2e::local_settings::<Profile>().relay)
            .expect("relay");
    let running = tokio::spawn(relay.run(shutdown.clone()));
    let wanted: HashSet<uuid::Uuid> = waiting.iter().map(|(id, _, _)| *id).chain([late_write]).collect();
    let messages =
        kafka::read_topic_until(&settings, &topic, Duration::from_secs(30), |m| m.len() >= wanted.len()).await;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), running).await;

    let mut seen = HashSet::new();
    let mut by_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for message in &messages {
        let body: serde_json::Value = serde_json::from_slice(message.payload().unwrap_or_default()).expect("json");
        let event_id: uuid::Uuid = body["event_id"].as_str().and_then(|s| s.parse().ok()).expect("event_id");
        if seen.insert(event_id) {
            by_key.entry(kafka::key(message)).or_default().push(body["seq"].as_u64().expect("seq"));
        }
    }
    assert_eq!(seen, wanted, "every waiting row and the old version's late write, nothing else");
    for (key, seqs) in &by_key {
        assert!(seqs.is_sorted(), "{key} out of order: {seqs:?}");
    }
    assert_eq!(by_key["k0"], [1, 2, 3], "k0's first event had been published before the upgrade");
}

#[derive(serde::Deserialize)]
struct Profile {
    #[serde(default)]
    relay: relay::settings::RelaySettings,
}

/// The last inventory migration with the stock in the product rows.
const BEFORE_THE_LEVELS: &str = "20261129000006";

#[derive(diesel::QueryableByName, Debug, PartialEq, Eq)]
struct Stock {
    #[diesel(sql_type = Text)]
    sku: String,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    on_hand: i32,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    reserved: i32,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    available: i32,
}

async fn stock_in(conn: &mut AsyncPgConnection, table: &str) -> Vec<Stock> {
    diesel::sql_query(format!(
        "SELECT sku, on_hand, reserved, available FROM {table} WHERE sku IN ('LAMP-01', 'MUG-01') ORDER BY sku"
    ))
    .load(conn)
    .await
    .expect("stock")
}

#[tokio::test]
async fn stock_held_in_the_product_rows_becomes_each_skus_first_level_and_comes_back_on_a_revert() {
    use inventory::startup::InventoryService;
    use messaging::service::ConsumingService as _;
    let database = TestDatabase::create(&e2e::pg_server_url(), &e2e::unique_name("stock_upgrade")).await;
    migrate(&database.url, || messaging::MIGRATIONS, None).await;
    migrate(&database.url, || InventoryService::MIGRATIONS, Some(BEFORE_THE_LEVELS)).await;
    let mut conn = AsyncPgConnection::establish(&database.url).await.expect("connection");
    // The version before at work: 3 mugs promised, 2 lamps shipped.
    diesel::sql_query("UPDATE products SET reserved = 3 WHERE sku = 'MUG-01'").execute(&mut conn).await.expect("mugs");
    diesel::sql_query("UPDATE products SET on_hand = on_hand - 2 WHERE sku = 'LAMP-01'")
        .execute(&mut conn)
        .await
        .expect("lamps");
    let before = stock_in(&mut conn, "products").await;
    assert_eq!(before[1], Stock { sku: "MUG-01".into(), on_hand: 5000, reserved: 3, available: 4997 });

    migrate(&database.url, || InventoryService::MIGRATIONS, None).await;
    assert_eq!(stock_in(&mut conn, "stock").await, before, "the stock view shows what the product rows held");
    let firsts: Vec<Count> = diesel::sql_query("SELECT count(*) AS count FROM stock_levels WHERE seq = 0")
        .load(&mut conn)
        .await
        .expect("levels");
    let products: Vec<Count> =
        diesel::sql_query("SELECT count(*) AS count FROM products").load(&mut conn).await.expect("products");
    assert_eq!(firsts[0].count, products[0].count, "every product has its first level");

    let reverting = AsyncPgConnection::establish(&database.url).await.expect("connection");
    tokio::task::spawn_blocking(move || {
        use diesel::migration::MigrationSource as _;
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::from(reverting);
        let migrations = InventoryService::MIGRATIONS.migrations().expect("inventory migrations");
        let levels = migrations.iter().find(|m| m.name().version().to_string() == "20261207000007").expect("000007");
        conn.revert_migration(&**levels).expect("revert");
    })
    .await
    .expect("reverted");
    assert_eq!(stock_in(&mut conn, "products").await, before, "the revert puts the newest levels back in the rows");
}
