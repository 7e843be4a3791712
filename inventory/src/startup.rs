//! Builds the inventory service and runs it until shutdown. HTTP is served at once; the
//! database is waited for and migrated in the background, and until then `/health` and
//! `/stock` answer 503 with the reason. The order-events consumer and the inbox retention then
//! run as supervised tasks: if one dies, the process stops with an error.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::body::BoxBody;
use actix_web::dev::{Server, ServiceRequest};
use actix_web::middleware::{Next, from_fn};
use actix_web::web;
use anyhow::Context as _;
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use messaging::inbox::InboxConsumer;
use messaging::metrics::ConsumerMetrics;
use platform::readiness::{Readiness, require_ready};
use platform::service::task;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi as _;

use crate::configuration::Settings;
use crate::consumer::OrderEvents;
use crate::gremlin::Gremlin;
use crate::routes;
use crate::state::AppState;

/// The inventory database's own tables (the messaging tables come first, see [`migrations`]).
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/inventory");

/// Every migration the inventory database needs, in order.
pub fn migrations() -> Vec<EmbeddedMigrations> {
    vec![messaging::MIGRATIONS, MIGRATIONS]
}

pub struct Application {
    port: u16,
    server: Server,
    consumer_stats: ConsumerMetrics,
    gremlin: Arc<Gremlin>,
    background: Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>,
    shutdown: CancellationToken,
}

impl Application {
    /// Binds the listener (port 0 picks a free one) and prepares everything; nothing waits
    /// for the database or the broker here.
    pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let pool = platform::db::pool(&settings.database)?;
        let metrics = platform::metrics::Metrics::new();
        metrics.watch_pool("inventory", pool.clone());
        let consumer_pool = platform::db::pool(&settings.database.for_consumer())?;
        metrics.watch_pool("inventory-consumer", consumer_pool.clone());
        let readiness = Arc::new(Readiness::default());
        let gremlin = Arc::new(Gremlin::new(settings.gremlin));
        gremlin.register(&metrics);
        let handler = OrderEvents { topic: settings.topics.inventory.clone(), gremlin: Arc::clone(&gremlin) };
        let topics = [settings.topics.orders.as_str()];
        let consumer = InboxConsumer::new(
            &settings.kafka,
            &settings.consumer_group,
            &topics,
            &settings.inbox,
            consumer_pool,
            handler,
        )
        .context("creating the order-events consumer")?
        .waiting_for(settings.database.standby_wait())
        .with_metrics(&metrics);
        let consumer_stats = consumer.stats();

        let listener = platform::service::bind(&settings.http)?;
        let port = platform::service::port_of(&listener);
        let retention_pool = pool.clone();
        let state = web::Data::new(AppState {
            pool,
            gremlin: Arc::clone(&gremlin),
            readiness: Arc::clone(&readiness),
            broker: platform::kafka::BrokerProbe::new(&settings.kafka, Some(&settings.topics.orders))?,
            consumer: consumer.health(),
        });
        let admin = settings.admin.clone();
        let control = consumer.control();
        let (ready, slow) = (Arc::clone(&readiness), Arc::clone(&gremlin));
        let documented = web::Data::new(platform::http::DocumentedRoutes::from_openapi(&routes::ApiDoc::openapi()));
        let server = platform::service::http_server(listener, &settings.http, metrics, move |config| {
            config.app_data(state.clone()).app_data(documented.clone());
            configure_routes(config, &ready, &slow, &admin, &control);
        })?;
        tracing::info!(port, "inventory service listening");

        let token = shutdown.clone();
        let background = async move {
            if !platform::service::prepare_database(&settings.database, migrations, &readiness, &token).await {
                return Ok(());
            }
            let tasks = vec![
                consumer.into_task("order-events consumer", token.clone()),
                task(
                    "inbox retention",
                    messaging::inbox::retain_periodically(retention_pool, &settings.inbox, token.clone()),
                ),
            ];
            platform::service::supervise(tasks, &readiness, &token).await
        };
        Ok(Self { port, server, consumer_stats, gremlin, background: Box::pin(background), shutdown })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn gremlin(&self) -> Arc<Gremlin> {
        Arc::clone(&self.gremlin)
    }

    pub fn consumer_stats(&self) -> ConsumerMetrics {
        self.consumer_stats.clone()
    }

    /// Serves and consumes until shutdown, then lets in-flight requests and the events in
    /// hand finish. An error means a background task died.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let result = platform::service::run_until_stopped(self.server, self.background, self.shutdown).await;
        tracing::info!("inventory service stopped");
        result
    }
}

/// The `/stock` middlewares get what they hold here, so a route can never run without it.
fn configure_routes(
    config: &mut web::ServiceConfig,
    readiness: &Arc<Readiness>,
    gremlin: &Arc<Gremlin>,
    admin: &platform::admin::AdminSettings,
    control: &Arc<dyn messaging::control::ConsumerControl>,
) {
    let (readiness, gremlin) = (Arc::clone(readiness), Arc::clone(gremlin));
    config
        .service(
            web::scope("/stock")
                .wrap(from_fn(move |request: ServiceRequest, next: Next<BoxBody>| {
                    routes::gremlin_delay(Arc::clone(&gremlin), request, next)
                }))
                .wrap(from_fn(move |request: ServiceRequest, next: Next<BoxBody>| {
                    require_ready(Arc::clone(&readiness), request, next)
                }))
                .service(routes::list_stock)
                .service(routes::get_stock),
        )
        .service(routes::live)
        .service(routes::ready)
        .route("/openapi.json", web::get().to(|| async { web::Json(routes::ApiDoc::openapi()) }));
    platform::admin::configure(config, admin, |admin| {
        messaging::control::configure(admin, Arc::clone(control));
        admin
            .route("/gremlin", web::get().to(routes::get_gremlin))
            .route("/gremlin", web::put().to(routes::put_gremlin))
            .route("/products/{sku}", web::put().to(routes::add_product));
    });
}

/// The inventory service, for the shared start-up (`platform::service::main`).
pub struct InventoryService;

impl platform::service::Service for InventoryService {
    type Settings = Settings;
    const PREFIX: &'static str = "INVENTORY";

    fn database(settings: &Settings) -> &platform::config::DatabaseSettings {
        &settings.database
    }

    fn migrations() -> Vec<EmbeddedMigrations> {
        migrations()
    }

    fn crash_points() -> Vec<&'static str> {
        [crate::CRASH_POINTS, messaging::CRASH_POINTS].concat()
    }

    async fn serve(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
        Application::build(settings, shutdown).await?.run_until_stopped().await
    }
}
