//! The relay process: one leader-elected relay per configured outbox database, plus
//! `/health` and `/health/live` on its HTTP port.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix_web::{HttpResponse, web};
use platform::config::{DatabaseSettings, HttpSettings, KafkaSettings};
use platform::kafka::BrokerProbe;
use relay::publisher::{OutboxRelay, RelaySettings};
use relay::stats::RelayStats;
use serde::Deserialize;

/// `RELAY__*` variables, e.g. `RELAY__OUTBOXES__ORDER=postgres://…/orders`.
#[derive(Debug, Deserialize)]
struct Settings {
    #[serde(default = "default_http")]
    http: HttpSettings,
    #[serde(default)]
    kafka: KafkaSettings,
    #[serde(default)]
    relay: RelaySettings,
    /// Outbox name → database URL.
    #[serde(default = "default_outboxes")]
    outboxes: BTreeMap<String, String>,
    /// `RELAY__ADMIN__TOKEN` enables `/admin/crash-points`.
    #[serde(default)]
    admin: platform::admin::AdminSettings,
}

fn default_http() -> HttpSettings {
    HttpSettings::on_port(8082)
}

fn default_outboxes() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("order".to_owned(), "postgres://postgres@127.0.0.1:5432/orders".to_owned()),
        ("inventory".to_owned(), "postgres://postgres@127.0.0.1:5432/inventory".to_owned()),
    ])
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    platform::telemetry::init();
    let settings: Settings = platform::config::load("RELAY")?;
    platform::crash::arm_from_env()?;
    let shutdown = platform::shutdown::on_signal();
    let metrics = platform::metrics::Metrics::new();
    let relay_metrics = relay::metrics::RelayMetrics::register(&metrics);

    let mut tasks = tokio::task::JoinSet::new();
    let mut outboxes = Vec::new();
    for (name, url) in &settings.outboxes {
        let relay =
            OutboxRelay::new(name, url, &settings.kafka, settings.relay.clone())?.with_metrics(relay_metrics.clone());
        // A small pool for health checks, apart from the relay's own session.
        let database = DatabaseSettings { pool_size: 1, ..DatabaseSettings::at(url.clone()) };
        outboxes.push(Outbox { name: name.clone(), stats: relay.stats(), pool: platform::db::pool(&database)? });
        tasks.spawn(relay.run(shutdown.clone()));
    }
    let broker = BrokerProbe::new(&settings.kafka, Some(schema::topics::ORDERS))?;
    let relays = async move { while tasks.join_next().await.is_some() {} };

    let listener = platform::service::bind(&settings.http)?;
    let state = web::Data::new(Health { outboxes, broker });
    let admin = settings.admin.clone();
    let server = platform::service::http_server(listener, 1, metrics, move |config: &mut web::ServiceConfig| {
        config
            .app_data(state.clone())
            .route("/health/live", web::get().to(|| async { platform::health::live() }))
            .route("/health", web::get().to(health));
        platform::admin::configure(config, &admin, |_| {});
    })?;
    // Each relay finishes its batch (waiting for its acknowledgements) before it returns.
    platform::service::run_until_stopped(server, relays, shutdown).await?;
    Ok(())
}

/// What `/health` looks at.
struct Health {
    outboxes: Vec<Outbox>,
    broker: BrokerProbe,
}

struct Outbox {
    name: String,
    stats: Arc<RelayStats>,
    pool: platform::db::PgPool,
}

/// Ready when every outbox database and the broker answer. Per outbox: whether this instance
/// is the active relay, what it published, and the backlog (rows, oldest age) it last measured.
async fn health(state: web::Data<Health>) -> HttpResponse {
    let mut checks = Vec::new();
    let mut outboxes = serde_json::Map::new();
    for outbox in &state.outboxes {
        let name = format!("{} outbox database", outbox.name);
        checks.push(platform::health::database(&name, &outbox.pool, "SELECT 1 FROM outbox LIMIT 1").await);
        let backlog = outbox.stats.backlog();
        outboxes.insert(
            outbox.name.clone(),
            serde_json::json!({
                "active": outbox.stats.is_active(),
                "published": outbox.stats.published(),
                "backlog_rows": backlog.map(|(rows, _)| rows),
                "oldest_pending_age_seconds": backlog.map(|(_, age)| age),
            }),
        );
    }
    checks.push(platform::health::broker(&state.broker).await);
    let mut extra = serde_json::Map::new();
    extra.insert("outboxes".into(), outboxes.into());
    platform::health::response_with(&checks, extra)
}
