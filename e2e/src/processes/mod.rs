//! The system as real processes: the `order`, `inventory` and `relay` binaries started as
//! children with their own databases, topics, groups and ports, so that a test can SIGKILL,
//! SIGTERM and restart them, or let a crash point abort them. The binaries are the ones
//! `cargo build --bins` put next to the test executable (scripts/test builds them first).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

mod jaeger;
mod notifications;
mod service;

pub use self::jaeger::Jaeger;
pub use self::notifications::{Mail, MailServer, Notifications, Owed};
pub use self::service::{Broker, Service, binary};
use crate::databases::TestDatabase;
use crate::kafka;

/// What process `process` of system.toml reads in a test system: the local profile, the
/// system's broker and topics and `settings`, each under its prefix, and its own Kafka
/// principal.
pub(crate) fn environment(
    process: &str,
    brokers: &str,
    topics: &schema::topics::Topics,
    settings: Vec<(&str, String)>,
) -> HashMap<String, String> {
    let prefix = &platform::system::process(process).prefix;
    let mut env = HashMap::from([
        ("CONFIG_FILE".to_owned(), crate::local_config().to_string_lossy().into_owned()),
        ("RUST_LOG".to_owned(), "info".to_owned()),
    ]);
    let shared = [
        ("KAFKA__BROKERS", brokers.to_owned()),
        ("TOPICS__ORDERS", topics.orders.clone()),
        ("TOPICS__INVENTORY", topics.inventory.clone()),
    ];
    env.extend(shared.into_iter().chain(settings).map(|(key, value)| (format!("{prefix}__{key}"), value)));
    env.extend(crate::kafka_sign_in(prefix, process));
    env
}

/// Order, inventory and relay as processes, plus the test's databases and topics.
pub struct Processes {
    pub name: String,
    pub order: Service,
    pub inventory: Service,
    pub relay: Service,
    pub order_db: String,
    pub inventory_db: String,
    pub topics: schema::topics::Topics,
    pub brokers: String,
    /// Acts as [`crate::TEST_CUSTOMER`]: its requests carry that customer's token.
    pub http: reqwest::Client,
    pub keys: crate::TestKeys,
    pub logs: PathBuf,
    /// Dropped with the system, even if the test panics.
    _databases: [TestDatabase; 2],
}

impl Processes {
    /// Prepares databases and names; `brokers` is the shared broker or the test's own.
    /// Nothing is started: call `start_all` (or start services one by one).
    pub async fn prepare(brokers: Option<String>) -> Self {
        crate::init_telemetry();
        let name = crate::unique_name("p");
        let databases = TestDatabase::pair(&name).await;
        let (order_db, inventory_db) = (databases[0].url.clone(), databases[1].url.clone());
        let brokers = brokers.unwrap_or_else(crate::test_brokers);
        let topics = schema::topics::Topics {
            orders: format!("{name}.orders.events"),
            inventory: format!("{name}.inventory.events"),
        };
        let logs = std::env::temp_dir().join("order-system-tests").join(&name);
        std::fs::create_dir_all(&logs).expect("log dir");

        let common = |process: &str, settings: Vec<(&str, String)>| environment(process, &brokers, &topics, settings);
        let service = |name: &'static str, env: HashMap<String, String>| Service::on_free_port(name, env, &logs);
        let keys = crate::TestKeys::new(&name);
        let order_env = common(
            "order",
            vec![
                ("AUTH__PUBLIC_KEY_FILE", keys.public_key_file.to_string_lossy().into_owned()),
                ("DATABASE__URL", order_db.clone()),
                ("CONSUMER_GROUP", format!("{name}-order")),
                ("ADMISSION__PER_CUSTOMER_PER_SECOND", "10000".into()),
                ("ADMISSION__PER_CUSTOMER_BURST", "10000".into()),
            ],
        );
        let inventory_env = common(
            "inventory",
            vec![("DATABASE__URL", inventory_db.clone()), ("CONSUMER_GROUP", format!("{name}-inventory"))],
        );
        let relay_env =
            common("relay", vec![("OUTBOXES__ORDER", order_db.clone()), ("OUTBOXES__INVENTORY", inventory_db.clone())]);

        Self {
            order: service("order", order_env),
            inventory: service("inventory", inventory_env),
            relay: service("relay", relay_env),
            name,
            order_db,
            inventory_db,
            topics,
            brokers,
            http: keys.client(crate::TEST_CUSTOMER, Duration::from_secs(10)),
            keys,
            logs,
            _databases: databases,
        }
    }

    /// Creates the topics on the broker and, where the broker requires sign-in, the ACLs of
    /// each service's principal for this system's topics and groups: kafka-init's job, done by
    /// kafka-init itself, so that every process test runs under the deployment's ACLs.
    pub async fn create_topics(&self) {
        let Some(password) = crate::kafka_password("admin") else {
            let settings = platform::config::KafkaSettings { brokers: self.brokers.clone(), ..crate::kafka_settings() };
            kafka::create_topics_with_dead_letters(&settings, &[&self.topics.orders, &self.topics.inventory]).await;
            return;
        };
        let name = &self.name;
        let partitions = kafka::PARTITIONS.to_string();
        let (orders, inventory) = (&self.topics.orders, &self.topics.inventory);
        let (order_group, inventory_group, notifications_group) =
            (format!("{name}-order"), format!("{name}-inventory"), format!("{name}-notifications"));
        let output = tokio::process::Command::new(service::binary("kafka-init"))
            .env("KAFKA_USERNAME", "admin")
            .env("KAFKA_PASSWORD", password)
            .args(["--brokers", &self.brokers, "--partitions", &partitions, "--topic", orders, "--topic", inventory])
            .args(["--acls", "--orders-topic", orders, "--inventory-topic", inventory])
            .args(["--order-group", &order_group, "--inventory-group", &inventory_group])
            .args(["--notifications-group", &notifications_group])
            .output()
            .await
            .expect("kafka-init runs");
        assert!(output.status.success(), "kafka-init failed: {}", String::from_utf8_lossy(&output.stderr));
    }

    pub async fn start_all(&mut self) {
        self.create_topics().await;
        self.relay.start(&[]);
        self.inventory.start(&[]);
        self.order.start(&[]);
        self.ready(&["order", "inventory"]).await;
    }

    /// Waits until the named services answer `/health` with 200.
    pub async fn ready(&self, which: &[&str]) {
        for name in which {
            let service = match *name {
                "order" => &self.order,
                "inventory" => &self.inventory,
                _ => &self.relay,
            };
            self.wait_ready(service).await;
        }
    }

    /// Waits until `service` answers `/health` with 200.
    pub async fn wait_ready(&self, service: &Service) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let ready = matches!(self.health(service).await, Some((200, _)));
            if ready {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} on port {} never became ready; see {}",
                service.name,
                service.port,
                self.logs.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET /health` of `service`: status and body, `None` if it does not answer.
    pub async fn health(&self, service: &Service) -> Option<(u16, Value)> {
        let response = self.http.get(format!("{}/health", service.url())).send().await.ok()?;
        let status = response.status().as_u16();
        Some((status, response.json().await.ok()?))
    }

    /// `POST /orders`; `Err` when the connection failed (the process died, or is down).
    pub async fn post(&self, key: &str, body: &Value, wait: &str) -> Result<(u16, Value), reqwest::Error> {
        let response = self
            .http
            .post(format!("{}/orders", self.order.url()))
            .header("Idempotency-Key", key)
            .header("Prefer", format!("wait={wait}"))
            .json(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// Places one order (retrying with the same key until the order service answers 2xx).
    pub async fn place(&self, key: &str, sku: &str, quantity: i64) -> String {
        let body = json!({"lines": [{"sku": sku, "quantity": quantity}]});
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((status, order)) = self.post(key, &body, "0").await
                && status / 100 == 2
            {
                return order["id"].as_str().expect("id").to_owned();
            }
            assert!(tokio::time::Instant::now() < deadline, "order {key} was never accepted");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn stock(&self, sku: &str) -> i64 {
        let mut conn = crate::TestSystem::connect(&self.inventory_db).await;
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        use inventory::views::stock;
        let available: i32 = stock::table.find(sku).select(stock::available).first(&mut conn).await.expect("stock");
        i64::from(available)
    }

    /// Waits until the checker, with no grace, is clean (every order settled, books exact).
    pub async fn settle(&self, within: Duration) -> checker::Report {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let report = checker::check(&self.order_db, &self.inventory_db, 0.0).await.expect("checker runs");
            if report.is_clean() && report.outbox_backlog.values().all(|b| b.rows == 0) {
                return report;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("not settled after {within:?}:\n{}\nlogs: {}", checker::render(&report), self.logs.display());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops everything; the databases are dropped with the system.
    pub async fn stop(mut self) {
        self.order.kill();
        self.inventory.kill();
        self.relay.kill();
    }
}
