//! The settings of a consuming service: the part every one has ([`ServiceSettings`]) and the
//! service's own, read from the same sources under the same prefix (`ORDER__HTTP__PORT` and
//! `ORDER__WAIT_BUDGET_MS` alike).
//!
//! The two parts are read one after the other from the same configuration value rather than
//! with `#[serde(flatten)]`: flattening buffers values in serde's generic form, and then a
//! string setting made of digits (an admin token `12345678`, which the environment source
//! reads as a number) no longer reads as a string.

use std::fmt;

use platform::admin::AdminSettings;
use platform::config::{DatabaseSettings, HttpSettings, KafkaSettings};
use schema::topics::Topics;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

use super::ConsumingService;
use crate::settings::InboxSettings;

/// What every consuming service is configured with. The port, the database and the consumer
/// group default to the service's own ([`ConsumingService`]).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct ServiceSettings {
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    #[serde(default)]
    pub kafka: KafkaSettings,
    #[serde(default)]
    pub topics: Topics,
    /// The consumer group the service's instances share; its own, so that no other service
    /// takes its events.
    pub consumer_group: String,
    /// `<PREFIX>__INBOX__*`: how long events are remembered, retries, concurrency, batches.
    #[serde(default)]
    pub inbox: InboxSettings,
    /// `<PREFIX>__ADMIN__TOKEN` enables `/admin/*` (crash points, the consumer's controls).
    #[serde(default)]
    pub admin: AdminSettings,
}

/// A consuming service's whole settings: [`ServiceSettings`] and its own (`S::Own`).
pub struct Settings<S: ConsumingService> {
    pub common: ServiceSettings,
    pub own: S::Own,
}

impl<S: ConsumingService> Clone for Settings<S> {
    fn clone(&self) -> Self {
        Self { common: self.common.clone(), own: self.own.clone() }
    }
}

impl<S: ConsumingService> fmt::Debug for Settings<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings").field("common", &self.common).field("own", &self.own).finish()
    }
}

/// Both parts as one table, as they are read.
impl<S: ConsumingService> Serialize for Settings<S> {
    fn serialize<Ser: serde::Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        let mut table = serde_json::Map::new();
        for part in [serde_json::to_value(&self.common), serde_json::to_value(&self.own)] {
            if let serde_json::Value::Object(fields) = part.map_err(serde::ser::Error::custom)? {
                table.extend(fields);
            }
        }
        table.serialize(serializer)
    }
}

impl<'de, S: ConsumingService> Deserialize<'de> for Settings<S> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut value = config::Value::deserialize(deserializer)?;
        let process = platform::system::process(S::NAME);
        default_at(&mut value, &["http", "port"], i64::from(process.port).into());
        let url = format!("postgres://postgres@127.0.0.1:5432/{}", process.database());
        default_at(&mut value, &["database", "url"], url.into());
        default_at(&mut value, &["consumer_group"], process.consumer_group().into());
        let common = value.clone().try_deserialize().map_err(D::Error::custom)?;
        let own = value.try_deserialize().map_err(D::Error::custom)?;
        Ok(Self { common, own })
    }
}

/// Sets `path` in `value` to `default` where nothing is there yet. A path through something
/// other than a table is left for the deserializer to report.
fn default_at(value: &mut config::Value, path: &[&str], default: config::Value) {
    let Some((last, parents)) = path.split_last() else { return };
    if matches!(value.kind, config::ValueKind::Nil) {
        value.kind = config::ValueKind::Table(config::Map::new());
    }
    let mut table = match &mut value.kind {
        config::ValueKind::Table(table) => table,
        _ => return,
    };
    for key in parents {
        let child = table
            .entry((*key).to_owned())
            .or_insert_with(|| config::Value::new(None, config::ValueKind::Table(config::Map::new())));
        table = match &mut child.kind {
            config::ValueKind::Table(table) => table,
            _ => return,
        };
    }
    table.entry((*last).to_owned()).or_insert(default);
}

#[cfg(test)]
mod tests {
    use example::Example;

    use super::Settings;

    mod example {
        use diesel_migrations::{EmbeddedMigrations, embed_migrations};
        use tokio_util::sync::CancellationToken;

        use crate::service::{ConsumingService, Settings};

        /// A service for the skeleton's own tests, under a name system.toml has (its defaults
        /// come from there).
        pub struct Example;

        #[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
        pub struct Own {
            #[serde(default = "plain")]
            pub flavour: String,
        }

        fn plain() -> String {
            "plain".into()
        }

        impl ConsumingService for Example {
            const NAME: &'static str = "inventory";
            const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");
            const CRASH_POINTS: &'static [&'static str] = &[];
            type Own = Own;

            async fn serve(_: Settings<Self>, _: CancellationToken) -> anyhow::Result<()> {
                Ok(())
            }
        }
    }

    fn load(pairs: &[(&str, &str)]) -> Result<Settings<Example>, config::ConfigError> {
        let mut builder = config::Config::builder();
        for (key, value) in pairs {
            builder = builder.set_override(*key, *value)?;
        }
        builder.build()?.try_deserialize()
    }

    #[test]
    fn the_system_description_gives_its_port_database_and_group_unless_configured() {
        let settings = load(&[("http.workers", "1")]).expect("settings");
        let described = platform::system::process("inventory");
        assert_eq!(settings.common.http.port, described.port);
        assert_eq!(settings.common.http.workers, 1);
        assert_eq!(
            settings.common.database.url,
            format!("postgres://postgres@127.0.0.1:5432/{}", described.database())
        );
        assert_eq!(settings.common.consumer_group, described.consumer_group());
        assert_eq!(settings.own.flavour, "plain");

        let settings =
            load(&[("http.port", "7000"), ("consumer_group", "mine"), ("flavour", "spicy")]).expect("settings");
        assert_eq!((settings.common.http.port, settings.common.consumer_group.as_str()), (7000, "mine"));
        assert_eq!(settings.own.flavour, "spicy");
    }

    #[test]
    fn a_setting_of_digits_still_reads_as_text() {
        let environment = platform::config::environment("INVENTORY").source(Some(config::Map::from([
            ("INVENTORY__ADMIN__TOKEN".to_owned(), "12345678901234567890123456789012".to_owned()),
            ("INVENTORY__FLAVOUR".to_owned(), "0042".to_owned()),
            ("INVENTORY__HTTP__PORT".to_owned(), "7000".to_owned()),
            ("INVENTORY__INBOX__MAX_IN_FLIGHT".to_owned(), "3".to_owned()),
        ])));
        let settings: Settings<Example> = config::Config::builder()
            .add_source(environment)
            .build()
            .and_then(config::Config::try_deserialize)
            .expect("settings");
        assert_eq!(settings.own.flavour, "0042");
        assert_eq!((settings.common.http.port, settings.common.inbox.max_in_flight), (7000, 3), "numbers still read");
        assert_eq!(settings.common.admin.token.as_deref(), Some("12345678901234567890123456789012"));
    }
}
