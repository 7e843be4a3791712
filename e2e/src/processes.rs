//! The system as real processes: the `order`, `inventory` and `relay` binaries started as
//! children with their own databases, topics, groups and ports, so that a test can SIGKILL,
//! SIGTERM and restart them, or let a crash point abort them. The binaries are the ones
//! `cargo build --bins` put next to the test executable (scripts/test builds them first).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use serde_json::{Value, json};

use crate::{kafka, pg_server_url};

/// One supervised-by-the-test process.
pub struct Service {
    pub name: &'static str,
    pub port: u16,
    env: HashMap<String, String>,
    child: Option<Child>,
    log: PathBuf,
}

impl Service {
    /// Starts the process with its environment plus `extra`.
    pub fn start(&mut self, extra: &[(&str, &str)]) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let binary = binary(self.name);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log file");
        let mut command = Command::new(&binary);
        command.envs(&self.env).env_remove("CRASH_POINTS").stdout(log.try_clone().expect("log")).stderr(log);
        for (key, value) in extra {
            command.env(key, value);
        }
        self.child = Some(command.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display())));
    }

    /// SIGKILL: no cleanup, no flush.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for a clean exit (up to `within`); returns whether it exited in time.
    pub async fn terminate(&mut self, within: Duration) -> bool {
        let Some(mut child) = self.child.take() else { return true };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Waits until the process exits by itself (a crash point aborted it).
    pub async fn exited(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            let done = self.child.as_mut().is_none_or(|child| matches!(child.try_wait(), Ok(Some(_))));
            if done {
                self.child = None;
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Another instance of the same service: same settings, database and consumer group, a
    /// port and log of its own. Not started.
    pub fn replica(&self, log_name: &str) -> Service {
        let port = free_port();
        let mut env = self.env.clone();
        for (key, value) in env.iter_mut() {
            if key.ends_with("__HTTP__PORT") {
                *value = port.to_string();
            }
        }
        let log = self.log.with_file_name(format!("{log_name}.log"));
        Service { name: self.name, port, env, child: None, log }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Where `cargo build --bins` put the service binaries: next to the test's `deps` folder.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>");
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --bins` first (scripts/test does)", path.display());
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// A single-node Kafka of the test's own, on free ports, that the test may kill and restart
/// (its data is kept across restarts, as a real broker's would be). Started by `scripts/kafka`,
/// the same launcher the local stack uses.
pub struct Broker {
    pub address: String,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Broker {
    pub fn new(dir: PathBuf) -> Self {
        // The controller listens on port + 1; take a pair that is free now.
        let port = loop {
            let port = free_port();
            if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
                break port;
            }
        };
        Self { address: format!("127.0.0.1:{port}"), port, dir, child: None }
    }

    /// Starts the broker and waits until it answers a metadata request.
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "the broker is already running");
        let launcher = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka");
        std::fs::create_dir_all(&self.dir).expect("broker dir");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("broker.log")).expect("log");
        let child = Command::new(launcher)
            .args(["run", "--dir", &self.dir.to_string_lossy(), "--port", &self.port.to_string(), "--heap", "256m"])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("scripts/kafka starts");
        self.child = Some(child);
        let settings = platform::config::KafkaSettings { brokers: self.address.clone(), ..crate::kafka_settings() };
        let probe = platform::kafka::BrokerProbe::new(&settings, None).expect("probe");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        while probe.check(Duration::from_secs(1)).await.is_err() {
            let exited = self.child.as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(Some(_))));
            assert!(!exited, "the test broker exited; see {}", self.dir.join("broker.log").display());
            assert!(tokio::time::Instant::now() < deadline, "the test broker did not answer at {}", self.address);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGKILL: the broker stops mid-flight; its data stays for the next start.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
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
    pub http: reqwest::Client,
    pub logs: PathBuf,
}

impl Processes {
    /// Prepares databases and names; `brokers` is the shared broker or the test's own.
    /// Nothing is started: call `start_all` (or start services one by one).
    pub async fn prepare(brokers: Option<String>) -> Self {
        crate::init_telemetry();
        let name = format!("p{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let server = pg_server_url();
        let order_db = crate::create_database(&server, &format!("{name}_orders")).await;
        let inventory_db = crate::create_database(&server, &format!("{name}_inventory")).await;
        let brokers = brokers.unwrap_or_else(crate::test_brokers);
        let topics = schema::topics::Topics {
            orders: format!("{name}.orders.events"),
            inventory: format!("{name}.inventory.events"),
        };
        let logs = std::env::temp_dir().join("order-system-tests").join(&name);
        std::fs::create_dir_all(&logs).expect("log dir");

        let common = |prefix: &str| {
            HashMap::from([
                ("CONFIG_FILE".to_owned(), crate::local_config().to_string_lossy().into_owned()),
                (format!("{prefix}__KAFKA__BROKERS"), brokers.clone()),
                (format!("{prefix}__TOPICS__ORDERS"), topics.orders.clone()),
                (format!("{prefix}__TOPICS__INVENTORY"), topics.inventory.clone()),
                ("RUST_LOG".to_owned(), "info".to_owned()),
            ])
        };
        let service = |name: &'static str, prefix: &str, mut env: HashMap<String, String>| {
            let port = free_port();
            env.insert(format!("{prefix}__HTTP__PORT"), port.to_string());
            Service { name, port, env, child: None, log: logs.join(format!("{name}.log")) }
        };
        let mut order_env = common("ORDER");
        order_env.insert("ORDER__DATABASE__URL".into(), order_db.clone());
        order_env.insert("ORDER__CONSUMER_GROUP".into(), format!("{name}-order"));
        order_env.insert("ORDER__ADMISSION__PER_CUSTOMER_PER_SECOND".into(), "10000".into());
        order_env.insert("ORDER__ADMISSION__PER_CUSTOMER_BURST".into(), "10000".into());
        let mut inventory_env = common("INVENTORY");
        inventory_env.insert("INVENTORY__DATABASE__URL".into(), inventory_db.clone());
        inventory_env.insert("INVENTORY__CONSUMER_GROUP".into(), format!("{name}-inventory"));
        let mut relay_env = common("RELAY");
        relay_env.insert("RELAY__OUTBOXES__ORDER".into(), order_db.clone());
        relay_env.insert("RELAY__OUTBOXES__INVENTORY".into(), inventory_db.clone());

        Self {
            order: service("order", "ORDER", order_env),
            inventory: service("inventory", "INVENTORY", inventory_env),
            relay: service("relay", "RELAY", relay_env),
            name,
            order_db,
            inventory_db,
            topics,
            brokers,
            http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("http client"),
            logs,
        }
    }

    /// Creates the topics on the broker (the job of kafka-init).
    pub async fn create_topics(&self) {
        let settings = platform::config::KafkaSettings { brokers: self.brokers.clone(), ..crate::kafka_settings() };
        kafka::create_topics_with_dead_letters(&settings, &[&self.topics.orders, &self.topics.inventory]).await;
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
        let body = json!({"customer_id": "proc-test", "lines": [{"sku": sku, "quantity": quantity}]});
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
        use schema::tables::inventory_db::products;
        let available: i32 =
            products::table.find(sku).select(products::available).first(&mut conn).await.expect("stock");
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

    /// Stops everything and drops the databases.
    pub async fn stop(mut self) {
        self.order.kill();
        self.inventory.kill();
        self.relay.kill();
        let server = pg_server_url();
        crate::drop_database(&server, &self.order_db).await;
        crate::drop_database(&server, &self.inventory_db).await;
    }
}
