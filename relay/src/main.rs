//! The relay process: one leader-elected relay per configured outbox database, plus
//! `/health` and `/health/live` on its HTTP port.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix_web::{HttpResponse, web};
use platform::config::{HttpSettings, KafkaSettings};
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
    let mut stats: Vec<(String, Arc<RelayStats>)> = Vec::new();
    for (name, url) in &settings.outboxes {
        let relay =
            OutboxRelay::new(name, url, &settings.kafka, settings.relay.clone())?.with_metrics(relay_metrics.clone());
        stats.push((name.clone(), relay.stats()));
        tasks.spawn(relay.run(shutdown.clone()));
    }
    let relays = async move { while tasks.join_next().await.is_some() {} };

    let listener = platform::service::bind(&settings.http)?;
    let stats = web::Data::new(stats);
    let admin = settings.admin.clone();
    let server = platform::service::http_server(listener, 1, metrics, move |config: &mut web::ServiceConfig| {
        config
            .app_data(stats.clone())
            .route("/health/live", web::get().to(|| async { platform::health::live() }))
            .route("/health", web::get().to(health));
        platform::admin::configure(config, &admin, |_| {});
    })?;
    // Each relay finishes its batch (waiting for its acknowledgements) before it returns.
    platform::service::run_until_stopped(server, relays, shutdown).await?;
    Ok(())
}

/// Reports, per outbox, whether this instance is the active relay and how much it published.
async fn health(stats: web::Data<Vec<(String, Arc<RelayStats>)>>) -> HttpResponse {
    let outboxes: serde_json::Map<String, serde_json::Value> = stats
        .iter()
        .map(|(name, s)| (name.clone(), serde_json::json!({ "active": s.is_active(), "published": s.published() })))
        .collect();
    HttpResponse::Ok().json(serde_json::json!({ "status": "up", "outboxes": outboxes }))
}
