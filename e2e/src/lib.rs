//! A whole system per test: fresh order and inventory databases, topics and consumer groups
//! named for the test, the order and inventory services on free ports, and relays that a
//! test can start, stop or kill. Talks to the real Postgres (`TEST_PG_URL`, default
//! `postgres://postgres@127.0.0.1:5432`) and the real broker (`TEST_KAFKA_BROKERS`, default
//! `127.0.0.1:9092`).

pub mod auth;
pub mod databases;
pub mod kafka;
pub mod options;
pub mod outbox;
pub mod ports;
pub mod processes;
pub mod prometheus;
pub mod replicated;
pub mod system;

use std::time::Duration;

use platform::config::KafkaSettings;

pub use self::auth::{TEST_CUSTOMER, TestKeys};
pub use self::databases::TestDatabase;
pub use self::ports::{free_port, free_ports};
pub use self::system::{Options, OutboxEnvelope, RelayHandle, TestSystem};

/// The tests' HTTP client. Idle connections are dropped after a second, well before the
/// services' 5 s keep-alive: a request sent on a connection the server is closing at that
/// moment fails with "connection closed before message completed", a race of the client's
/// making, not a fault of the system under test.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    client_builder(timeout).build().expect("http client")
}

/// [`http_client`]'s settings, for a client that adds its own (a customer's token).
pub fn client_builder(timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder().timeout(timeout).pool_idle_timeout(Duration::from_secs(1))
}

/// How long a test waits for an order to settle before failing.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(45);

/// Waits until an asynchronous `check` holds, failing the test with `what` after
/// [`SETTLE_TIMEOUT`].
pub async fn eventually_async<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what} did not happen");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Waits until `check` holds, failing the test with `what` after [`SETTLE_TIMEOUT`].
pub async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "{what} did not happen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `prefix` and 12 random hex digits: a name for one test's databases, topics and groups that
/// no other test, run or left over, shares.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

pub fn pg_server_url() -> String {
    std::env::var("TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// `path` inside the checkout the tests run from. The directory is the one cargo or nextest
/// names when it runs the test (`CARGO_MANIFEST_DIR` at run time), not the one the binary
/// was compiled in: a shared target directory can hand a clone a test binary compiled in
/// another clone, whose path is gone.
pub fn repo_file(path: &str) -> std::path::PathBuf {
    let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    std::path::Path::new(&crate_dir).join("..").join(path)
}

/// The local profile that the local stack and the process tests read through `CONFIG_FILE`.
pub fn local_config() -> std::path::PathBuf {
    repo_file("config/local.toml")
}

/// The brokers of the test run (`TEST_KAFKA_BROKERS`; scripts/test starts a private Kafka).
pub fn test_brokers() -> String {
    std::env::var("TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// The file the test run's brokers take their principals from (`TEST_KAFKA_CREDENTIALS`, lines
/// `principal password`, as scripts/test writes it); unset: brokers without sign-in.
pub fn kafka_credentials() -> Option<std::path::PathBuf> {
    std::env::var_os("TEST_KAFKA_CREDENTIALS").filter(|path| !path.is_empty()).map(Into::into)
}

/// The password of `principal` on the test run's brokers, if they require sign-in.
pub fn kafka_password(principal: &str) -> Option<String> {
    let file = kafka_credentials()?;
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let found = text.lines().find_map(|line| line.strip_prefix(principal)?.strip_prefix(' ').map(str::to_owned));
    Some(found.unwrap_or_else(|| panic!("{} names no principal {principal}", file.display())))
}

/// The settings a service process needs to sign in as `principal` (decision 0028):
/// `PREFIX__KAFKA__USERNAME` and `PREFIX__KAFKA__PASSWORD`; none without sign-in.
pub fn kafka_sign_in(prefix: &str, principal: &str) -> Vec<(String, String)> {
    kafka_password(principal).map_or_else(Vec::new, |password| {
        vec![
            (format!("{prefix}__KAFKA__USERNAME"), principal.to_owned()),
            (format!("{prefix}__KAFKA__PASSWORD"), password),
        ]
    })
}

/// A service's settings exactly as the local profile gives them, with the test run's
/// brokers, signed in as the super user (an in-process system's services share one client
/// identity; the process tests run each as its own principal); a test then sets where the
/// service runs (port, databases, topics, group).
pub fn local_settings<T: serde::de::DeserializeOwned>() -> T {
    let mut overrides = vec![("kafka.brokers".to_owned(), config::Value::from(test_brokers()))];
    if let Some(password) = kafka_password("admin") {
        overrides.push(("kafka.username".to_owned(), config::Value::from("admin")));
        overrides.push(("kafka.password".to_owned(), config::Value::from(password)));
    }
    platform::config::load_file_with(&local_config(), overrides)
        .unwrap_or_else(|error| panic!("{}: {error}", local_config().display()))
}

/// The Kafka client settings of the local profile, on the test run's brokers.
pub fn kafka_settings() -> KafkaSettings {
    #[derive(serde::Deserialize)]
    struct Profile {
        #[serde(default)]
        kafka: KafkaSettings,
    }
    local_settings::<Profile>().kafka
}

/// Test logs go through the test harness's capture, filtered by `RUST_LOG`.
pub fn init_telemetry() {
    platform::telemetry::init("e2e").expect("OpenTelemetry settings");
}
