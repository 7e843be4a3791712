//! [`TestSystem`]: the order and inventory services and the relays in this test's process,
//! on databases and topics of their own.
//!
//! One room, over 300 lines: starting the system and the helpers every system test calls on
//! it (placing, settling, arming crash points) share its fields and its teardown.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use diesel_async::{AsyncConnection as _, AsyncPgConnection};
use messaging::metrics::ConsumerMetrics;
use messaging::service::{Process, ServiceSettings};
use platform::config::{DatabaseSettings, HttpSettings, KafkaSettings};
use platform::service::Service;
use relay::metrics::OutboxMetrics;
use relay::publish::Outgoing;
use relay::relay::OutboxRelay;
use relay::settings::RelaySettings;
use schema::topics::Topics;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::databases::TestDatabase;
pub use crate::options::Options;
use crate::{SETTLE_TIMEOUT, init_telemetry, kafka, kafka_settings, local_settings};

/// One relay instance that a test can kill.
pub struct RelayHandle {
    pub stats: OutboxMetrics,
    task: JoinHandle<()>,
}

impl RelayHandle {
    /// Kills the relay as a crash would: its task is dropped mid-flight, its database
    /// session closes, and its lanes go with it.
    pub fn kill(&self) {
        self.task.abort();
    }
}

pub struct TestSystem {
    pub name: String,
    pub order_url: String,
    pub inventory_url: String,
    pub order_db: String,
    pub inventory_db: String,
    pub topics: Topics,
    pub kafka: KafkaSettings,
    pub order_consumer: ConsumerMetrics,
    pub inventory_consumer: ConsumerMetrics,
    pub gremlin: Arc<inventory::gremlin::Gremlin>,
    pub order_relays: Vec<RelayHandle>,
    pub inventory_relays: Vec<RelayHandle>,
    /// Acts as [`crate::TEST_CUSTOMER`]: its requests carry that customer's token.
    pub http: reqwest::Client,
    /// The customers' key pair: `keys.token(customer)`, `keys.client(customer, timeout)`.
    pub keys: crate::TestKeys,
    /// For tests that publish messages themselves (one producer: making one takes a while).
    producer: std::sync::OnceLock<rdkafka::producer::FutureProducer>,
    shutdown: CancellationToken,
    services: Vec<JoinHandle<anyhow::Result<()>>>,
    /// What the relays [`spawn_relay`](Self::spawn_relay) makes wait for (`Options::sync_standbys`).
    sync_standbys: u32,
    /// Dropped last: the databases go when the system does, even if the test panics.
    _databases: Vec<TestDatabase>,
    _live: Live,
}

/// How many test systems this process runs now. Crash points are process-wide, so a test
/// that arms one must be the only one in its process (cargo-nextest runs each test in a
/// process of its own; scripts/test's fallback runs them one at a time).
static LIVE_SYSTEMS: AtomicUsize = AtomicUsize::new(0);

struct Live;

impl Live {
    fn new() -> Self {
        LIVE_SYSTEMS.fetch_add(1, Ordering::SeqCst);
        Self
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        LIVE_SYSTEMS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An armed crash point, disarmed when dropped.
#[must_use = "the point is disarmed when this is dropped"]
pub struct ArmedPoint(&'static str);

impl Drop for ArmedPoint {
    fn drop(&mut self) {
        let _ = platform::crash::arm(self.0, "off");
    }
}

/// Where a service of an in-process system runs: on a free port with one worker, on its test
/// database, topics and group, with the options every service takes.
fn in_test(settings: &mut ServiceSettings, database: &str, topics: &Topics, group: String, options: &Options) {
    settings.http = HttpSettings { workers: 1, ..HttpSettings::on_port(0) };
    settings.database = DatabaseSettings {
        pool_size: 8,
        consumer_pool_size: 4,
        sync_standbys: options.sync_standbys,
        ..DatabaseSettings::at(database)
    };
    if let Some(timeout) = options.consumer_statement_timeout_ms {
        settings.database.consumer_statement_timeout_ms = timeout;
    }
    settings.topics = topics.clone();
    settings.consumer_group = group;
    settings.admin.token = options.admin_token.clone();
    if let Some(inbox) = &options.inbox {
        settings.inbox = inbox.clone();
    }
}

impl TestSystem {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Self {
        init_telemetry();
        platform::crash::register(&<Process<order::startup::OrderService> as Service>::crash_points());
        platform::crash::register(&<Process<inventory::startup::InventoryService> as Service>::crash_points());
        platform::crash::register(relay::CRASH_POINTS);
        let name = crate::unique_name("t");
        let (databases, [order_db, inventory_db]) = match options.database_urls.clone() {
            Some(urls) => (Vec::new(), urls),
            None => {
                let pair = TestDatabase::pair(&name).await;
                let urls = [pair[0].url.clone(), pair[1].url.clone()];
                (Vec::from(pair), urls)
            }
        };
        let kafka = kafka_settings();
        let topics = Topics { orders: format!("{name}.orders.events"), inventory: format!("{name}.inventory.events") };
        kafka::create_topics_with_dead_letters(&kafka, &[&topics.orders, &topics.inventory]).await;

        let shutdown = CancellationToken::new();
        let keys = crate::TestKeys::new(&name);
        let mut order: order::configuration::Settings = local_settings();
        in_test(&mut order.common, &order_db, &topics, format!("{name}-order"), &options);
        order.own.auth.public_key_file = Some(keys.public_key_file.clone());
        order.own.auth.dev_signing_key_file = options.dev_tokens.then(|| keys.private_key_file.clone());
        order.own.wait_budget_ms = options.wait_budget_ms;
        order.own.admission = options.admission.clone();
        let order = order::startup::Application::build(order, shutdown.clone()).await.expect("order service builds");

        let mut inventory: inventory::configuration::Settings = local_settings();
        in_test(&mut inventory.common, &inventory_db, &topics, format!("{name}-inventory"), &options);
        inventory.own.gremlin = options.gremlin;
        inventory.own.levels = options.levels.clone();
        let inventory = inventory::startup::Application::build(inventory, shutdown.clone())
            .await
            .expect("inventory service builds");

        let mut system = Self {
            order_url: format!("http://127.0.0.1:{}", order.port()),
            inventory_url: format!("http://127.0.0.1:{}", inventory.port()),
            order_consumer: order.consumer_stats(),
            inventory_consumer: inventory.consumer_stats(),
            gremlin: inventory.gremlin(),
            services: vec![tokio::spawn(order.run_until_stopped()), tokio::spawn(inventory.run_until_stopped())],
            name,
            order_db,
            inventory_db,
            topics,
            kafka,
            order_relays: Vec::new(),
            inventory_relays: Vec::new(),
            http: keys.client(crate::TEST_CUSTOMER, Duration::from_secs(20)),
            keys,
            producer: std::sync::OnceLock::new(),
            shutdown,
            _databases: databases,
            sync_standbys: options.sync_standbys,
            _live: Live::new(),
        };
        system.wait_until_ready().await;
        for _ in 0..options.order_relays {
            let relay = system.spawn_relay("order", &system.order_db.clone());
            system.order_relays.push(relay);
        }
        for _ in 0..options.inventory_relays {
            let relay = system.spawn_relay("inventory", &system.inventory_db.clone());
            system.inventory_relays.push(relay);
        }
        system
    }

    async fn wait_until_ready(&self) {
        for base in [&self.order_url, &self.inventory_url] {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while !self.http.get(format!("{base}/health")).send().await.is_ok_and(|r| r.status() == 200) {
                assert!(tokio::time::Instant::now() < deadline, "{base} never became ready");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// A producer for this system's broker, made on first use.
    pub fn producer(&self) -> &rdkafka::producer::FutureProducer {
        self.producer.get_or_init(|| platform::kafka::producer(&self.kafka).expect("producer"))
    }

    /// Starts one more relay instance for the outbox of `database_url`.
    pub fn spawn_relay(&self, name: &str, database_url: &str) -> RelayHandle {
        #[derive(serde::Deserialize)]
        struct Profile {
            #[serde(default)]
            relay: RelaySettings,
        }
        let settings = RelaySettings { sync_standbys: self.sync_standbys, ..local_settings::<Profile>().relay };
        let relay = OutboxRelay::new(name, database_url, &self.kafka, settings).expect("relay");
        let stats = relay.stats();
        RelayHandle { stats, task: tokio::spawn(relay.run(self.shutdown.clone())) }
    }

    /// Arms crash point `name` (e.g. `1*error`) for this test. Refused when another test
    /// system runs in this process: the point would fire in that test too.
    pub fn arm(&self, name: &'static str, action: &str) -> ArmedPoint {
        let live = LIVE_SYSTEMS.load(Ordering::SeqCst);
        assert_eq!(live, 1, "crash points are process-wide: run this test alone in its process ({live} systems run)");
        platform::crash::arm(name, action).expect("crash point armed");
        ArmedPoint(name)
    }

    /// Stops every service; the test's databases are dropped with the system.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        for service in &mut self.services {
            let _ = tokio::time::timeout(Duration::from_secs(30), service).await;
        }
        for relay in self.order_relays.iter().chain(&self.inventory_relays) {
            relay.kill();
        }
    }

    /// `POST /orders` with the given key and body, as [`crate::TEST_CUSTOMER`].
    pub async fn post_order(&self, key: &str, body: &Value) -> reqwest::Response {
        self.post_order_as(crate::TEST_CUSTOMER, key, body).await
    }

    /// `POST /orders` with the given key and body, as `customer`.
    pub async fn post_order_as(&self, customer: &str, key: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/orders", self.order_url))
            .bearer_auth(self.keys.token(customer))
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .expect("order service answers")
    }

    /// Places an order for one line without waiting for the outcome (`Prefer: wait=0`) and
    /// returns its id.
    pub async fn place(&self, sku: &str, quantity: i64) -> String {
        let body = json!({"lines": [{"sku": sku, "quantity": quantity}]});
        let response = self
            .http
            .post(format!("{}/orders", self.order_url))
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .header("Prefer", "wait=0")
            .json(&body)
            .send()
            .await
            .expect("order service answers");
        assert_eq!(response.status(), 202, "order accepted");
        let order: Value = response.json().await.expect("json");
        order["id"].as_str().expect("id").to_owned()
    }

    /// `GET /orders/{id}` as [`crate::TEST_CUSTOMER`]; fails the test unless it is 200.
    pub async fn order(&self, id: &str) -> Value {
        self.order_as(crate::TEST_CUSTOMER, id).await
    }

    /// `GET /orders/{id}` as `customer`; fails the test unless it is 200.
    pub async fn order_as(&self, customer: &str, id: &str) -> Value {
        let url = format!("{}/orders/{id}", self.order_url);
        let response = self.http.get(url).bearer_auth(self.keys.token(customer)).send().await.expect("answers");
        let status = response.status();
        let body: Value = response.json().await.expect("json");
        assert_eq!(status, 200, "order {id}: {body}");
        body
    }

    pub async fn cancel(&self, id: &str) -> reqwest::Response {
        self.http.post(format!("{}/orders/{id}/cancel", self.order_url)).send().await.expect("answers")
    }

    /// `POST /orders/{id}/ship` as a fulfilment operator, with Idempotency-Key `key`.
    pub async fn ship(&self, id: &str, key: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/orders/{id}/ship", self.order_url))
            .bearer_auth(self.keys.operator_token("packer-1"))
            .header("Idempotency-Key", key)
            .send()
            .await
            .expect("order service answers")
    }

    /// One SKU's stock as inventory shows it: (available, on hand, reserved).
    pub async fn stock_levels(&self, sku: &str) -> (i64, i64, i64) {
        let response = self.http.get(format!("{}/stock/{sku}", self.inventory_url)).send().await.expect("answers");
        let body: Value = response.json().await.expect("json");
        let field = |name: &str| body[name].as_i64().unwrap_or_else(|| panic!("{name} in {body}"));
        (field("available"), field("on_hand"), field("reserved"))
    }

    /// Waits until the order of [`crate::TEST_CUSTOMER`] is settled (no answer from inventory
    /// awaited) and returns it.
    pub async fn settled(&self, id: &str) -> Value {
        self.settled_as(crate::TEST_CUSTOMER, id).await
    }

    /// Waits until `customer`'s order is settled and returns it.
    pub async fn settled_as(&self, customer: &str, id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        loop {
            let order = self.order_as(customer, id).await;
            if matches!(order["status"].as_str(), Some("CONFIRMED" | "REJECTED" | "CANCELLED" | "SHIPPED")) {
                return order;
            }
            assert!(tokio::time::Instant::now() < deadline, "order {id} did not settle: {order}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts the stock of `sku` (every SKU if `None`) over at `units`, all on hand and none
    /// reserved, as if the product had entered the catalogue with them: for a test to set up
    /// before it places orders (the books would not balance after).
    pub async fn restart_stock(&self, sku: Option<&str>, units: i32) {
        use diesel_async::SimpleAsyncConnection as _;
        let only = sku.map(|sku| format!(" WHERE sku = '{sku}'")).unwrap_or_default();
        // One simple query, so one transaction: the update locks the rows before the append.
        let sql = format!(
            "UPDATE products SET initial_stock = {units}{only}; \
             INSERT INTO stock_levels (sku, seq, on_hand, reserved) \
             SELECT sku, max(seq) + 1, {units}, 0 FROM stock_levels{only} GROUP BY sku"
        );
        let mut conn = Self::connect(&self.inventory_db).await;
        conn.batch_execute(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Where each product row lies in its table (`ctid`, by SKU): a row that is updated moves
    /// to a new version, so the same places before and after show that nothing rewrote them.
    pub async fn product_row_places(&self) -> Vec<(String, String)> {
        #[derive(diesel::QueryableByName)]
        struct Place {
            #[diesel(sql_type = diesel::sql_types::Text)]
            sku: String,
            #[diesel(sql_type = diesel::sql_types::Text)]
            place: String,
        }
        let mut conn = Self::connect(&self.inventory_db).await;
        let places: Vec<Place> = diesel_async::RunQueryDsl::load(
            diesel::sql_query("SELECT sku, ctid::text AS place FROM products ORDER BY sku"),
            &mut conn,
        )
        .await
        .expect("product rows");
        places.into_iter().map(|p| (p.sku, p.place)).collect()
    }

    pub async fn stock(&self, sku: &str) -> i64 {
        let response = self.http.get(format!("{}/stock/{sku}", self.inventory_url)).send().await.expect("answers");
        let body: Value = response.json().await.expect("json");
        body["available"].as_i64().expect("available")
    }

    /// Runs the invariant checker against this system's databases with no grace period:
    /// every order must be settled.
    pub async fn books(&self) -> checker::Report {
        checker::check(&self.order_db, &self.inventory_db, 0.0).await.expect("checker runs")
    }

    /// Asserts the books balance, printing the report if they do not.
    pub async fn assert_books_balance(&self) {
        let report = self.books().await;
        assert!(report.is_clean(), "{}", checker::render(&report));
    }

    /// Takes `count` rows out of the outbox of `database_url`, oldest first, waiting up to
    /// 30 s for them to be written (for a test that runs no relay for that outbox and
    /// publishes the events itself, broken or not): they count as published from then on.
    /// Fails if more are there.
    pub async fn take_outbox(database_url: &str, count: usize) -> Vec<Outgoing> {
        use diesel_async::RunQueryDsl as _;
        let mut conn = Self::connect(database_url).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let waiting: Waiting = diesel::sql_query("SELECT count(*) AS rows FROM outbox_pending")
                .get_result(&mut conn)
                .await
                .expect("outbox");
            if waiting.rows >= count as i64 {
                break;
            }
            let written = waiting.rows;
            assert!(tokio::time::Instant::now() < deadline, "{count} outbox rows never appeared ({written} did)");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // In one statement: the rows its snapshot sees, and every lane's position moved to that
        // snapshot, as a relay's would be once it published them.
        let rows: Vec<TakenRow> = diesel::sql_query(
            "WITH taken AS (SELECT * FROM outbox_pending),
                  moved AS (UPDATE outbox_lanes SET done = pg_current_snapshot(), window_end = NULL, window_last = NULL
                            RETURNING lane)
             SELECT id, lane, event_id, topic, message_key, event_type, correlation_id, traceparent,
                    envelope::text AS payload, created_at
               FROM taken ORDER BY id",
        )
        .load(&mut conn)
        .await
        .expect("outbox rows taken");
        assert_eq!(rows.len(), count, "the outbox holds only the expected rows");
        rows.into_iter().map(TakenRow::outgoing).collect()
    }

    pub async fn connect(url: &str) -> AsyncPgConnection {
        AsyncPgConnection::establish(url).await.expect("database connection")
    }
}

#[derive(diesel::QueryableByName)]
struct Waiting {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    rows: i64,
}

/// An outbox row as [`TestSystem::take_outbox`] reads it.
#[derive(diesel::QueryableByName)]
struct TakenRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    id: i64,
    #[diesel(sql_type = diesel::sql_types::SmallInt)]
    lane: i16,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    event_id: uuid::Uuid,
    #[diesel(sql_type = diesel::sql_types::Text)]
    topic: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    message_key: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    event_type: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    correlation_id: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    traceparent: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Text)]
    payload: String,
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    created_at: chrono::DateTime<chrono::Utc>,
}

impl TakenRow {
    fn outgoing(self) -> Outgoing {
        Outgoing {
            id: self.id,
            lane: self.lane,
            event_id: self.event_id,
            topic: self.topic,
            message_key: self.message_key,
            event_type: self.event_type,
            correlation_id: self.correlation_id,
            traceparent: self.traceparent,
            payload: self.payload,
            created_at: self.created_at,
        }
    }
}

/// The envelope of an outbox row taken with [`TestSystem::take_outbox`], as JSON, for a test
/// that looks inside it or breaks it.
pub trait OutboxEnvelope {
    fn envelope(&self) -> Value;
}

impl OutboxEnvelope for Outgoing {
    fn envelope(&self) -> Value {
        serde_json::from_str(&self.payload).expect("the outbox holds JSON envelopes")
    }
}
