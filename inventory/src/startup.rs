//! Builds the inventory service on the consuming services' skeleton (`messaging::service`):
//! its handler of orders' events, the gremlin, its state and its routes (`/stock`, and
//! `/admin/gremlin` and `/admin/products` beside the skeleton's admin routes). Until the
//! database is migrated, `/stock` answers 503.

use std::sync::Arc;

use actix_web::body::BoxBody;
use actix_web::dev::ServiceRequest;
use actix_web::middleware::{Next, from_fn};
use actix_web::web;
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use messaging::metrics::ConsumerMetrics;
use messaging::service::{Broker, Checks, ConsumingService, Running, Skeleton};
use platform::readiness::{Readiness, require_ready};
use prometheus_client::metrics::counter::Counter;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi as _;

use crate::configuration::{InventorySettings, Settings};
use crate::consumer::OrderEvents;
use crate::gremlin::Gremlin;
use crate::routes;
use crate::state::AppState;
use crate::stock::retention::forget_periodically;

pub struct Application {
    running: Running,
    consumer_stats: ConsumerMetrics,
    gremlin: Arc<Gremlin>,
}

impl Application {
    /// Binds the listener (port 0 picks a free one) and prepares everything; nothing waits
    /// for the database or the broker here.
    pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let Settings { common, own } = settings;
        let skeleton = Skeleton::new::<InventoryService>(&common)?;
        let gremlin = Arc::new(Gremlin::new(own.gremlin));
        gremlin.register(skeleton.metrics());
        let handler = OrderEvents { topic: common.topics.inventory.clone(), gremlin: Arc::clone(&gremlin) };
        let checks =
            Checks { probe_sql: "SELECT 1 FROM products LIMIT 1", broker: Broker::Required, optional: Vec::new() };
        let forgotten = Counter::default();
        skeleton.metrics().register(
            "stock_levels_forgotten",
            "Stock levels deleted because they were older than the retention (never a SKU's newest)",
            forgotten.clone(),
        );
        let levels = own.levels;
        let service = skeleton.consume(&[common.topics.orders.as_str()], handler, checks)?;
        let pool = service.pool().clone();
        let service = service.task(move |shutdown| {
            platform::service::task("stock level retention", forget_periodically(pool, levels, forgotten, shutdown))
        });
        let consumer_stats = service.stats();
        let state = web::Data::new(AppState { pool: service.pool().clone(), gremlin: Arc::clone(&gremlin) });
        let (ready, slow) = (Arc::clone(service.readiness()), Arc::clone(&gremlin));
        let documented = web::Data::new(platform::http::DocumentedRoutes::from_openapi(&routes::ApiDoc::openapi()));
        let running = service.serve(
            shutdown,
            move |config| {
                config.app_data(state.clone()).app_data(documented.clone());
                configure_routes(config, &ready, &slow);
            },
            |admin| {
                admin
                    .route("/gremlin", web::get().to(routes::get_gremlin))
                    .route("/gremlin", web::put().to(routes::put_gremlin))
                    .route("/products/{sku}", web::put().to(routes::add_product));
            },
        )?;
        Ok(Self { running, consumer_stats, gremlin })
    }

    pub fn port(&self) -> u16 {
        self.running.port()
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
        self.running.run_until_stopped().await
    }
}

/// The `/stock` middlewares get what they hold here, so a route can never run without it.
fn configure_routes(config: &mut web::ServiceConfig, readiness: &Arc<Readiness>, gremlin: &Arc<Gremlin>) {
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
        .route("/openapi.json", web::get().to(|| async { web::Json(routes::ApiDoc::openapi()) }));
}

/// The inventory service, for the shared start-up (`messaging::service::Process`).
pub struct InventoryService;

impl ConsumingService for InventoryService {
    const NAME: &'static str = "inventory";
    const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/inventory");
    const CRASH_POINTS: &'static [&'static str] = crate::CRASH_POINTS;
    type Own = InventorySettings;

    async fn serve(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
        Application::build(settings, shutdown).await?.run_until_stopped().await
    }
}
