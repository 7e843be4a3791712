//! Layered configuration: defaults in code, then an optional TOML file, then environment
//! variables. A service with prefix `ORDER` reads `ORDER__HTTP__PORT=8080` as `http.port`.
//! The file is `$CONFIG_FILE` if set; the local stack and the tests all use
//! `config/local.toml`, so a setting they share is changed in one line.
//!
//! One room: every settings struct the services share, each field documented once, here.

use std::path::Path;

use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Loads the settings of the service whose environment prefix is `prefix` (e.g. `ORDER`).
pub fn load<T: DeserializeOwned>(prefix: &str) -> Result<T, config::ConfigError> {
    let file = std::env::var("CONFIG_FILE").ok();
    builder(file.as_deref().map(Path::new)).add_source(environment(prefix)).build()?.try_deserialize()
}

/// The variables under `prefix`, as text: a setting reads them as the number, flag or text it
/// is when it is deserialized. Guessing the type up front (`try_parsing`) changed text made of
/// digits on its way in: a 32-digit admin token became a float and came back as
/// `12345678901234567000000000000000`, and `0042` became `42`.
pub fn environment(prefix: &str) -> config::Environment {
    config::Environment::with_prefix(prefix).prefix_separator("__").separator("__")
}

/// The settings as the code gives them, with no file and no environment: what `describe`
/// prints.
pub fn defaults<T: DeserializeOwned>() -> Result<T, config::ConfigError> {
    builder(None).build()?.try_deserialize()
}

/// Loads settings from the TOML `file` with `overrides` (`("database.url", value)`) on top and
/// no environment: what a test uses to start a service in-process exactly as the local
/// stack configures it, on its own ports, databases and topics.
pub fn load_file_with<T: DeserializeOwned>(
    file: &Path,
    overrides: impl IntoIterator<Item = (String, config::Value)>,
) -> Result<T, config::ConfigError> {
    let mut builder = builder(Some(file));
    for (key, value) in overrides {
        builder = builder.set_override(key, value)?;
    }
    builder.build()?.try_deserialize()
}

fn builder(file: Option<&Path>) -> config::ConfigBuilder<config::builder::DefaultState> {
    let builder = config::Config::builder();
    match file {
        // Required: a named file that is missing is a mistake, not an empty configuration.
        Some(path) => builder.add_source(config::File::from(path).format(config::FileFormat::Toml)),
        None => builder,
    }
}

/// Where a service listens for HTTP.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct HttpSettings {
    #[serde(default = "default_host")]
    pub host: String,
    pub port: u16,
    /// actix-web worker threads; the machine this runs on has 2 cores.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// How long a client may take to send a request's body once its headers arrived. A
    /// request counts against admission only once its body is in, so a client trickling
    /// bytes holds a connection, not a slot, and only this long (then 408).
    #[serde(default = "default_body_deadline_ms")]
    pub body_deadline_ms: u64,
    /// The most connections the process keeps open, over all its workers (actix's default is
    /// 25,000 per worker); beyond it, new ones wait in the listen queue. Each open connection
    /// holds its buffers (measured: about 16 KiB; docs/security.md), so this bounds what a
    /// client opening connections can take: 2,048 of them, about 32 MiB.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

impl HttpSettings {
    pub fn on_port(port: u16) -> Self {
        Self {
            host: default_host(),
            port,
            workers: default_workers(),
            body_deadline_ms: default_body_deadline_ms(),
            max_connections: default_max_connections(),
        }
    }
}

fn default_max_connections() -> usize {
    2_048
}

fn default_body_deadline_ms() -> u64 {
    5_000
}

fn default_host() -> String {
    "127.0.0.1".into()
}

fn default_workers() -> usize {
    2
}

/// One Postgres database.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct DatabaseSettings {
    /// A libpq-style URL, e.g. `postgres://postgres@127.0.0.1:5432/orders`.
    pub url: String,
    /// Connections for HTTP requests.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Connections for the consumer, a pool of its own so that a burst of events cannot
    /// keep requests waiting for a connection (and the other way round).
    #[serde(default = "default_consumer_pool_size")]
    pub consumer_pool_size: usize,
    /// The longest a consumer's statement may run (a lock held elsewhere, a hung query)
    /// before Postgres cancels it: the event then fails as "busy" and is retried, and a
    /// partition held that long shows in `/health` instead of hanging unseen.
    #[serde(default = "default_consumer_statement_timeout_ms")]
    pub consumer_statement_timeout_ms: u64,
    /// Set on every connection of this pool; none for request pools (their deadline is
    /// the reply budget).
    #[serde(skip)]
    pub statement_timeout_ms: Option<u64>,
    /// Synchronous standbys that must hold a commit before the service acts on it: answers a
    /// client (rule 1 of decision 0030) or stores the offset of an event it applied (rule 3).
    /// 0 (the default): a database without standbys; set it to the count of synchronous
    /// standbys the database has.
    #[serde(default)]
    pub sync_standbys: u32,
    /// How long a commit waits for them before the service gives up acting on it: a request
    /// is answered 503 (retry with the same key), an event is tried again.
    #[serde(default = "default_sync_standby_wait_ms")]
    pub sync_standby_wait_ms: u64,
}

impl DatabaseSettings {
    /// A database at `url` with the default pool sizes.
    pub fn at(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: default_pool_size(),
            consumer_pool_size: default_consumer_pool_size(),
            consumer_statement_timeout_ms: default_consumer_statement_timeout_ms(),
            statement_timeout_ms: None,
            sync_standbys: 0,
            sync_standby_wait_ms: default_sync_standby_wait_ms(),
        }
    }

    /// What a commit on this database waits for before the service acts on it.
    pub fn standby_wait(&self) -> crate::standby::StandbyWait {
        crate::standby::StandbyWait {
            standbys: self.sync_standbys,
            bound: std::time::Duration::from_millis(self.sync_standby_wait_ms),
        }
    }

    /// The settings of the consumer's pool.
    pub fn for_consumer(&self) -> Self {
        Self {
            pool_size: self.consumer_pool_size,
            statement_timeout_ms: Some(self.consumer_statement_timeout_ms),
            ..self.clone()
        }
    }
}

fn default_sync_standby_wait_ms() -> u64 {
    2_000
}

fn default_pool_size() -> usize {
    16
}

fn default_consumer_pool_size() -> usize {
    8
}

fn default_consumer_statement_timeout_ms() -> u64 {
    10_000
}

/// The Kafka cluster and the client settings that matter for latency. Only standard client
/// behaviour is used, so the same settings run on any Kafka cluster.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct KafkaSettings {
    /// Bootstrap servers, comma-separated.
    pub brokers: String,
    /// How long the broker may hold a fetch while no data arrives. Kafka answers a waiting
    /// fetch as soon as a record arrives, so this bounds idle polling, not latency.
    pub fetch_wait_max_ms: u32,
    /// How long the producer waits to fill a batch.
    pub linger_ms: u32,
    /// How long the producer keeps retrying a message before reporting it failed.
    pub message_timeout_ms: u32,
    /// How long a silent consumer keeps its partitions before the group reassigns them.
    pub session_timeout_ms: u32,
    /// How often a consumer tells the group it is alive, and so how soon it learns that the
    /// group is rebalancing: a partition handed over by an instance that stops (or taken for
    /// one that joins) waits up to this long for its new owner. Kept below
    /// `session_timeout_ms / 3`.
    pub heartbeat_interval_ms: u32,
    /// How long a request may go unanswered before the client gives up on the connection
    /// and retries (a produce goes to the partition's new leader, without duplicates: the
    /// producer is idempotent). Must exceed `fetch_wait_max_ms` by a good margin.
    pub request_timeout_ms: u32,
    /// A stable identity in the consumer group (Kafka's static membership), unique per
    /// instance, e.g. `inventory-1`: an instance restarted under the same id gets its
    /// partitions back at once, without a rebalance; one that does not come back keeps
    /// them until `session_timeout_ms`. Empty: a new member at every start. Set it only
    /// where ids are stable (supervisord programs, StatefulSet ordinals), never to a
    /// Deployment's pod name: a pod that goes never comes back under its name.
    pub instance_id: String,
    /// Whether a graceful stop leaves the consumer group, so that the group hands the
    /// instance's partitions to the others at once (decision 0027). Kafka's static members do
    /// not leave when they close; with this on they do, and a scale-in stalls nothing. Off
    /// only where every stopped instance comes back within a second under the same
    /// `instance_id`; then the group keeps its partitions for it until `session_timeout_ms`.
    pub leave_group_on_stop: bool,
    /// The consumer group protocol: `classic` (the default: JoinGroup/SyncGroup rounds, with
    /// the cooperative-sticky assignor and the heartbeat and session settings above) or
    /// `consumer` (KIP-848: the broker assigns, and the heartbeat and session times are the
    /// broker's `group.consumer.*` settings). Decision 0027 says why the default is classic
    /// and why the local profile and `deploy/` choose `consumer`.
    pub group_protocol: GroupProtocol,
    /// librdkafka debug contexts (e.g. `cgrp,fetch`), logged through tracing; empty: none.
    pub debug: String,
    /// The most a consumer fetches ahead of what it handles, in KiB (librdkafka's default is
    /// 64 MiB, half a 128 MiB pod): events are a few hundred bytes, and a few MiB keep any
    /// partition count busy.
    pub consumer_prefetch_kbytes: u32,
    /// The most a producer holds before the broker acknowledged it, in KiB (librdkafka's
    /// default is 1 GiB); a full buffer makes a send wait, never fail.
    pub producer_buffer_kbytes: u32,
    /// This process's principal on the broker (SASL/SCRAM-SHA-512, decision 0028), e.g.
    /// `order`; what it may read and write is the broker's ACLs for that name. Empty: no
    /// authentication (a broker with an open listener only).
    pub username: String,
    /// The principal's password, from `<SERVICE>__KAFKA__PASSWORD` (a secret); never logged.
    pub password: Secret,
    /// Whether the broker's listener is TLS (`SASL_SSL`): in deployments, where credentials
    /// cross a network. Locally every listener is on 127.0.0.1 and plain.
    pub tls: bool,
    /// PEM file of the certificate authority that signed the broker's certificate (e.g.
    /// Strimzi's cluster CA); empty: the system's trust store.
    pub ca_file: String,
}

impl KafkaSettings {
    /// A command-line tool's client (kafka-init, dlq, the benchmarks' tools): the brokers it
    /// was given, signed in as `KAFKA_USERNAME` with `KAFKA_PASSWORD` (and over TLS if
    /// `KAFKA_TLS=true`) from its environment; a password is never an argument, which every
    /// user of the machine could read.
    pub fn for_tool(brokers: &str) -> Self {
        let var = |name| std::env::var(name).unwrap_or_default();
        Self {
            brokers: brokers.to_owned(),
            username: var("KAFKA_USERNAME"),
            password: Secret::new(var("KAFKA_PASSWORD")),
            tls: var("KAFKA_TLS") == "true",
            ca_file: var("KAFKA_CA_FILE"),
            ..Self::default()
        }
    }
}

/// `url` with the password of its `user:password@` part replaced by `***`, for messages and
/// logs (SMTP and database URLs carry credentials).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split_once(':').map_or(credentials, |(user, _)| user);
            let hidden = if credentials.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

/// A credential read from settings: its `Debug` shows that it is set, never what it is, so
/// that a settings struct can be logged whole.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Written as its `Debug` (`<unset>` or `<redacted>`): a settings struct can be printed whole
/// (`describe`) without printing what the secret is.
impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{self:?}"))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "<unset>" } else { "<redacted>" })
    }
}

/// See [`KafkaSettings::group_protocol`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupProtocol {
    #[default]
    Classic,
    Consumer,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            fetch_wait_max_ms: 500,
            linger_ms: 2,
            message_timeout_ms: 30_000,
            session_timeout_ms: 10_000,
            heartbeat_interval_ms: 250,
            request_timeout_ms: 10_000,
            instance_id: String::new(),
            leave_group_on_stop: true,
            group_protocol: GroupProtocol::Classic,
            debug: String::new(),
            consumer_prefetch_kbytes: 4 * 1024,
            producer_buffer_kbytes: 16 * 1024,
            username: String::new(),
            password: Secret::default(),
            tls: false,
            ca_file: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn a_url_keeps_everything_but_its_password() {
        assert_eq!(
            redact_url("smtp://mailer:p%40ss:word@smtp.example.com:587?tls=required"),
            "smtp://mailer:***@smtp.example.com:587?tls=required"
        );
        assert_eq!(redact_url("postgres://postgres:secret@db:5432/orders"), "postgres://postgres:***@db:5432/orders");
        assert_eq!(redact_url("postgres://postgres@db/orders"), "postgres://postgres@db/orders");
        assert_eq!(redact_url("smtp://127.0.0.1:2525"), "smtp://127.0.0.1:2525");
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
