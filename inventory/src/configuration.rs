//! Settings of the inventory service: defaults, then `$CONFIG_FILE`, then `INVENTORY__*`
//! variables (e.g. `INVENTORY__DATABASE__URL`, `INVENTORY__HTTP__PORT`).

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
    /// The consumer group that reads orders' events.
    #[serde(default = "default_group")]
    pub consumer_group: String,
    /// The gremlin's pattern at start (`INVENTORY__GREMLIN__ENABLED=true`, `..__ONE_IN=4`,
    /// `..__DELAY_MS=5000`); changeable at run time through `/admin/gremlin`.
    #[serde(default)]
    pub gremlin: crate::gremlin::Pattern,
    /// `INVENTORY__ADMIN__TOKEN` enables `/admin/*`.
    #[serde(default)]
    pub admin: platform::admin::AdminSettings,
    /// `INVENTORY__INBOX__KEEP_HOURS` (default 336, above the topics' 168 h retention).
    #[serde(default)]
    pub inbox: messaging::settings::InboxSettings,
}

fn default_http() -> HttpSettings {
    HttpSettings::on_port(8081)
}

fn default_database() -> DatabaseSettings {
    DatabaseSettings::at("postgres://postgres@127.0.0.1:5432/inventory")
}

fn default_group() -> String {
    "inventory-service".into()
}
