//! Settings of the order service: defaults, then `$CONFIG_FILE`, then `ORDER__*` variables
//! (e.g. `ORDER__DATABASE__URL`, `ORDER__HTTP__PORT`, `ORDER__WAIT_BUDGET_MS`). What every
//! consuming service has (HTTP, database, Kafka, topics, group, inbox, admin) is
//! `messaging::service::ServiceSettings`; the order service's own settings are here.

use serde::Deserialize;

/// The order service's whole settings.
pub type Settings = messaging::service::Settings<crate::startup::OrderService>;

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct OrderSettings {
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
    /// `ORDER__LATENCY_ALERT__WINDOW_SECS` (30) and `..__THRESHOLD_MS` (1000): the web
    /// page's latency alert.
    #[serde(default)]
    pub latency_alert: crate::console::latency::LatencyAlertSettings,
    /// `ORDER__PEERS__INVENTORY`, `ORDER__PEERS__RELAY`, `ORDER__PEERS__TRACES`: where the page's views of the
    /// other services come from.
    #[serde(default)]
    pub peers: crate::console::PeerSettings,
}

fn default_wait_budget_ms() -> u64 {
    2_000
}
