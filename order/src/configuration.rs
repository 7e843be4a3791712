//! Settings of the order service: defaults, then `$CONFIG_FILE`, then `ORDER__*` variables
//! (e.g. `ORDER__DATABASE__URL`, `ORDER__HTTP__PORT`, `ORDER__KAFKA__BROKERS`).

use platform::config::{DatabaseSettings, HttpSettings, KafkaSettings};
use schema::topics::Topics;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    #[serde(default = "default_http")]
    pub http: HttpSettings,
    #[serde(default = "default_database")]
    pub database: DatabaseSettings,
    #[serde(default)]
    pub kafka: KafkaSettings,
    #[serde(default)]
    pub topics: Topics,
    /// The consumer group that reads inventory's decisions.
    #[serde(default = "default_group")]
    pub consumer_group: String,
    /// How long `POST /orders` waits for the outcome before answering 202; a client may ask
    /// for less with `Prefer: wait=N`, never for more.
    #[serde(default = "default_wait_budget_ms")]
    pub wait_budget_ms: u64,
    #[serde(default)]
    pub admission: crate::admission::AdmissionSettings,
    /// `ORDER__AUTH__PUBLIC_KEY_FILE` (required), `..__ISSUER`, `..__AUDIENCE`: how customers'
    /// tokens are checked (decision 0013).
    #[serde(default)]
    pub auth: platform::auth::AuthSettings,
    /// `ORDER__ADMIN__TOKEN` enables `/admin/*`.
    #[serde(default)]
    pub admin: platform::admin::AdminSettings,
    /// `ORDER__INBOX__*`: how long events are remembered, retries, concurrency.
    #[serde(default)]
    pub inbox: messaging::settings::InboxSettings,
    /// `ORDER__LATENCY_ALERT__WINDOW_SECS` (30) and `..__THRESHOLD_MS` (1000): the web
    /// page's latency alert.
    #[serde(default)]
    pub latency_alert: crate::latency::LatencyAlertSettings,
    /// `ORDER__PEERS__INVENTORY`, `ORDER__PEERS__RELAY`, `ORDER__PEERS__TRACES`: where the page's views of the
    /// other services come from.
    #[serde(default)]
    pub peers: crate::routes::page::PeerSettings,
}

fn default_http() -> HttpSettings {
    HttpSettings::on_port(8080)
}

fn default_database() -> DatabaseSettings {
    DatabaseSettings::at("postgres://postgres@127.0.0.1:5432/orders")
}

fn default_wait_budget_ms() -> u64 {
    2_000
}

fn default_group() -> String {
    "order-service".into()
}
