//! Test events written straight into a service's outbox log, in the caller's transaction, as a
//! service's own write would be: for tests of the relay that need transactions of a chosen
//! shape rather than orders. [`LogOnly`] is a database holding nothing but the log, for tests
//! that run a relay of their own.

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, SmallInt, Text, Uuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl as _};
use platform::config::KafkaSettings;

use crate::TestDatabase;

/// A database of its own with only the messaging tables (the outbox log), named after a test.
pub struct LogOnly {
    pub database: TestDatabase,
    /// `<prefix><random>`: the test's own name, for its topics.
    pub name: String,
}

impl LogOnly {
    /// Creates and migrates `<name>_orders`, `name` being `prefix` and a random suffix.
    pub async fn create(prefix: &str) -> Self {
        let name = crate::unique_name(prefix);
        let database = TestDatabase::create(&crate::pg_server_url(), &format!("{name}_orders")).await;
        platform::db::run_migrations(&database.url, vec![messaging::MIGRATIONS]).await.expect("migrations");
        Self { database, name }
    }

    /// Creates topic `<name>.<suffix>` on the test broker; returns the broker's settings and the
    /// topic.
    pub async fn topic(&self, suffix: &str) -> (KafkaSettings, String) {
        let kafka = crate::kafka_settings();
        let topic = format!("{}.{suffix}", self.name);
        crate::kafka::create_topics(&kafka, &[&topic]).await;
        (kafka, topic)
    }
}

/// The event id a published envelope carries.
pub fn event_id(message: &rdkafka::message::OwnedMessage) -> Option<uuid::Uuid> {
    let body: serde_json::Value = serde_json::from_slice(rdkafka::Message::payload(message)?).ok()?;
    body["event_id"].as_str()?.parse().ok()
}

/// Where a test event landed in the log.
#[derive(QueryableByName)]
pub struct WrittenEvent {
    #[diesel(sql_type = Uuid)]
    pub event_id: uuid::Uuid,
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// The writing transaction's id, as the log records it.
    #[diesel(sql_type = Text)]
    pub tx: String,
    #[diesel(sql_type = SmallInt)]
    pub lane: i16,
}

/// Writes an event of type `Test` for `key` on `topic` into the outbox log on `conn`; its body
/// is `fields` (a JSON object) with its new `event_id` added. `source` names the test in the
/// row's correlation id.
pub async fn write_test_event(
    conn: &mut AsyncPgConnection,
    topic: &str,
    key: &str,
    source: &str,
    mut fields: serde_json::Value,
) -> WrittenEvent {
    let event_id = uuid::Uuid::now_v7();
    fields["event_id"] = serde_json::json!(event_id);
    diesel::sql_query(
        "INSERT INTO outbox_log (event_id, topic, message_key, event_type, correlation_id, envelope)
         VALUES ($1, $2, $3, 'Test', $4, $5::jsonb) RETURNING event_id, id, tx::text AS tx, lane",
    )
    .bind::<Uuid, _>(event_id)
    .bind::<Text, _>(topic)
    .bind::<Text, _>(key)
    .bind::<Text, _>(source)
    .bind::<Text, _>(fields.to_string())
    .get_result(conn)
    .await
    .expect("outbox row written")
}
