//! Layered configuration: defaults in code, then an optional TOML file, then environment
//! variables. A service with prefix `ORDER` reads `ORDER__HTTP__PORT=8080` as `http.port`.
//! The file is `$CONFIG_FILE` if set.

use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Loads the settings of the service whose environment prefix is `prefix` (e.g. `ORDER`).
pub fn load<T: DeserializeOwned>(prefix: &str) -> Result<T, config::ConfigError> {
    let mut builder = config::Config::builder();
    if let Ok(path) = std::env::var("CONFIG_FILE") {
        builder = builder.add_source(config::File::with_name(&path));
    }
    builder
        .add_source(config::Environment::with_prefix(prefix).prefix_separator("__").separator("__").try_parsing(true))
        .build()?
        .try_deserialize()
}

/// Where a service listens for HTTP.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    #[serde(default = "default_host")]
    pub host: String,
    pub port: u16,
    /// actix-web worker threads; the machine this runs on has 2 cores.
    #[serde(default = "default_workers")]
    pub workers: usize,
}

impl HttpSettings {
    pub fn on_port(port: u16) -> Self {
        Self { host: default_host(), port, workers: default_workers() }
    }
}

fn default_host() -> String {
    "127.0.0.1".into()
}

fn default_workers() -> usize {
    2
}

/// One Postgres database.
#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    /// A libpq-style URL, e.g. `postgres://postgres@127.0.0.1:5432/orders`.
    pub url: String,
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
}

fn default_pool_size() -> usize {
    16
}

/// The Kafka cluster and the client settings that matter for latency.
#[derive(Debug, Clone, Deserialize)]
pub struct KafkaSettings {
    #[serde(default = "default_brokers")]
    pub brokers: String,
    /// How long the broker may hold a fetch waiting for data. Low, because some brokers
    /// (tansu) do not answer a waiting fetch early when a record arrives.
    #[serde(default = "default_fetch_wait_max_ms")]
    pub fetch_wait_max_ms: u32,
    /// How long the producer waits to fill a batch.
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u32,
    /// How long the producer keeps retrying a message before reporting it failed.
    #[serde(default = "default_message_timeout_ms")]
    pub message_timeout_ms: u32,
    /// How long a silent consumer keeps its partitions before the group reassigns them.
    #[serde(default = "default_session_timeout_ms")]
    pub session_timeout_ms: u32,
    /// How partitions are given to consumers: `group` (the broker's group coordinator splits
    /// them between instances; standard Kafka) or `all` (every instance reads every partition,
    /// resuming from the group's committed offsets). `all` works around tansu 0.6.0 keeping a
    /// killed member as group leader forever (docs/broker-notes.md); it is safe because
    /// consumers deduplicate, but instances no longer share the work.
    #[serde(default)]
    pub assignment: Assignment,
    /// Idempotent producer (the default, for Apache Kafka). `false` sends without a producer id
    /// and with one request in flight per connection, which keeps per-partition order on
    /// retries (retries may duplicate; consumers deduplicate). It works around tansu 0.6.0,
    /// whose storage dies when a producer id from before a broker restart sends again
    /// (docs/broker-notes.md).
    #[serde(default = "default_true")]
    pub idempotence: bool,
    /// librdkafka debug contexts (e.g. `cgrp,fetch`), logged through tracing; empty: none.
    #[serde(default)]
    pub debug: String,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: default_brokers(),
            fetch_wait_max_ms: default_fetch_wait_max_ms(),
            linger_ms: default_linger_ms(),
            message_timeout_ms: default_message_timeout_ms(),
            session_timeout_ms: default_session_timeout_ms(),
            assignment: Assignment::default(),
            idempotence: true,
            debug: String::new(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_brokers() -> String {
    "127.0.0.1:9092".into()
}
fn default_fetch_wait_max_ms() -> u32 {
    10
}
fn default_linger_ms() -> u32 {
    2
}
fn default_message_timeout_ms() -> u32 {
    30_000
}
fn default_session_timeout_ms() -> u32 {
    10_000
}

/// See [`KafkaSettings::assignment`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Assignment {
    #[default]
    Group,
    All,
}

/// How long consumers remember the events they applied.
#[derive(Debug, Clone, Deserialize)]
pub struct InboxSettings {
    /// Must exceed the topics' retention (kafka-init sets 168 h): 14 days by default.
    #[serde(default = "default_keep_hours")]
    pub keep_hours: u64,
    #[serde(default = "default_purge_every_secs")]
    pub purge_every_secs: u64,
    /// How many times an event whose handler fails permanently is tried before it goes to
    /// the dead-letter topic (`<topic>.dlq`).
    #[serde(default = "default_dead_letter_attempts")]
    pub dead_letter_attempts: usize,
    /// The first pause between those attempts; it doubles after each.
    #[serde(default = "default_retry_first_delay_ms")]
    pub retry_first_delay_ms: u64,
}

impl Default for InboxSettings {
    fn default() -> Self {
        Self {
            keep_hours: default_keep_hours(),
            purge_every_secs: default_purge_every_secs(),
            dead_letter_attempts: default_dead_letter_attempts(),
            retry_first_delay_ms: default_retry_first_delay_ms(),
        }
    }
}

fn default_dead_letter_attempts() -> usize {
    4
}

fn default_retry_first_delay_ms() -> u64 {
    200
}

fn default_keep_hours() -> u64 {
    14 * 24
}

fn default_purge_every_secs() -> u64 {
    3_600
}
