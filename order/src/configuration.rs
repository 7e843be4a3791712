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
}

impl Settings {
    pub fn load() -> Result<Self, config::ConfigError> {
        platform::config::load("ORDER")
    }
}

fn default_http() -> HttpSettings {
    HttpSettings::on_port(8080)
}

fn default_database() -> DatabaseSettings {
    DatabaseSettings { url: "postgres://postgres@127.0.0.1:5432/orders".into(), pool_size: 16 }
}

fn default_group() -> String {
    "order-service".into()
}
