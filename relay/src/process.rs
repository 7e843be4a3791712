//! The relay as a process: one [`OutboxRelay`] per configured outbox database, sharing each
//! outbox's lanes with the other instances, plus `/health` and `/health/live` on its HTTP
//! port. A relay task that dies takes the process down with a non-zero exit, so its
//! supervisor restarts it.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix_web::{HttpResponse, web};
use platform::config::{DatabaseSettings, HttpSettings, KafkaSettings};
use platform::kafka::BrokerProbe;
use platform::readiness::Readiness;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::metrics::{OutboxMetrics, RelayMetrics};
use crate::relay::OutboxRelay;
use crate::settings::RelaySettings;

/// `RELAY__*` variables, e.g. `RELAY__OUTBOXES__ORDER=postgres://…/orders`.
#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct Settings {
    pub http: HttpSettings,
    pub kafka: KafkaSettings,
    pub relay: RelaySettings,
    /// Outbox name → database URL.
    pub outboxes: BTreeMap<String, String>,
    /// `RELAY__ADMIN__TOKEN` enables `/admin/crash-points`.
    pub admin: platform::admin::AdminSettings,
}

impl Default for Settings {
    fn default() -> Self {
        // What system.toml says: the relay's port, and each outbox in its service's database.
        let relay = platform::system::process(<RelayProcess as platform::service::Service>::NAME);
        let outbox_at = |service: &String| {
            let database = platform::system::process(service).database();
            (service.clone(), format!("postgres://postgres@127.0.0.1:5432/{database}"))
        };
        Self {
            http: HttpSettings::on_port(relay.port),
            kafka: KafkaSettings::default(),
            relay: RelaySettings::default(),
            outboxes: relay.outboxes.iter().map(outbox_at).collect(),
            admin: platform::admin::AdminSettings::default(),
        }
    }
}

/// The relay, for the shared start-up (`platform::service::main`).
pub struct RelayProcess;

impl platform::service::Service for RelayProcess {
    type Settings = Settings;
    const NAME: &'static str = "relay";

    /// None: the outbox's tables belong to each service's database, and each service's
    /// `migrate` creates them.
    fn migrations(_: &Settings) -> Vec<platform::service::Migrations> {
        Vec::new()
    }

    fn crash_points() -> Vec<&'static str> {
        crate::CRASH_POINTS.to_vec()
    }

    async fn serve(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
        serve(settings, shutdown).await
    }
}

async fn serve(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let metrics = platform::metrics::Metrics::new();
    let relay_metrics = RelayMetrics::default();
    relay_metrics.register(&metrics);

    let mut tasks = Vec::new();
    let mut outboxes = Vec::new();
    for (name, url) in &settings.outboxes {
        let relay = OutboxRelay::new(name, url, &settings.kafka, settings.relay.clone())?.with_metrics(&relay_metrics);
        // A small pool for health checks, apart from the relay's own session.
        let database = DatabaseSettings { pool_size: 1, ..DatabaseSettings::at(url.clone()) };
        outboxes.push(Outbox { name: name.clone(), stats: relay.stats(), pool: platform::db::pool(&database)? });
        tasks.push(platform::service::task(format!("{name} relay"), relay.run(shutdown.clone())));
    }
    let broker = BrokerProbe::new(&settings.kafka, Some(schema::topics::ORDERS))?;
    let readiness = Arc::new(Readiness::default());
    readiness.set_ready();
    let background = {
        let (readiness, shutdown) = (Arc::clone(&readiness), shutdown.clone());
        async move { platform::service::supervise(tasks, &readiness, &shutdown).await }
    };

    let listener = platform::service::bind(&settings.http)?;
    let state = web::Data::new(Health { outboxes, broker, readiness });
    let admin = settings.admin.clone();
    let server = platform::service::http_server(
        listener,
        &HttpSettings { workers: 1, ..settings.http.clone() },
        metrics,
        move |config: &mut web::ServiceConfig| {
            config
                .app_data(state.clone())
                .route("/health/live", web::get().to(|| async { platform::health::live() }))
                .route("/health", web::get().to(health));
            platform::admin::configure(config, &admin, |_| {});
        },
    )?;
    // Each relay settles its batches in flight (waiting for their acknowledgements) before it
    // returns.
    platform::service::run_until_stopped(server, background, shutdown).await
}

/// What `/health` looks at.
struct Health {
    outboxes: Vec<Outbox>,
    broker: BrokerProbe,
    readiness: Arc<Readiness>,
}

struct Outbox {
    name: String,
    stats: OutboxMetrics,
    pool: platform::db::PgPool,
}

/// Ready when every outbox database and the broker answer and no relay died. Per outbox:
/// whether this instance publishes some of it and how many lanes, what it published, and the
/// backlog (rows, oldest age) it last measured.
async fn health(state: web::Data<Health>) -> HttpResponse {
    let mut checks = vec![platform::health::background(&state.readiness)];
    let mut outboxes = serde_json::Map::new();
    for outbox in &state.outboxes {
        let name = format!("{} outbox database", outbox.name);
        let probe = || platform::health::database(&name, &outbox.pool, "SELECT 1 FROM outbox_lanes LIMIT 1");
        checks.push(state.readiness.checked(&name, probe).await);
        let backlog = outbox.stats.backlog();
        outboxes.insert(
            outbox.name.clone(),
            serde_json::json!({
                "active": outbox.stats.is_active(),
                "lanes_held": outbox.stats.lanes_held(),
                "published": outbox.stats.published_count(),
                "held_for_standby": outbox.stats.held_for_standby(),
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
