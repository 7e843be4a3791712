//! Builds the order service and runs it until shutdown. HTTP is served at once; the database
//! is waited for and migrated in the background, and until then `/health` and `/orders`
//! answer 503 with the reason. The inventory-events consumer, the status listener and the
//! inbox retention then run as supervised tasks: if one dies, the process stops with an error.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::BoxBody;
use actix_web::dev::{Server, ServiceRequest};
use actix_web::middleware::{Next, from_fn};
use actix_web::web;
use anyhow::Context as _;
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use messaging::inbox::InboxConsumer;
use messaging::metrics::ConsumerMetrics;
use platform::http::DocumentedRoutes;
use platform::readiness::{Readiness, require_ready};
use platform::service::task;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi as _;

use crate::admission::{RateLimiter, WaitingCap, limit_in_flight};
use crate::auth::DevTokens;
use crate::configuration::Settings;
use crate::consumer::InventoryEvents;
use crate::latency::LatencyWindow;
use crate::metrics::OrderMetrics;
use crate::routes;
use crate::routes::page::{Peers, record_latency};
use crate::state::AppState;
use crate::waiters::Waiters;

/// The order database's own tables (the messaging tables come first, see [`migrations`]).
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/order");

/// Every migration the order database needs, in order.
pub fn migrations() -> Vec<EmbeddedMigrations> {
    vec![messaging::MIGRATIONS, MIGRATIONS]
}

pub struct Application {
    port: u16,
    server: Server,
    consumer_stats: ConsumerMetrics,
    background: Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>,
    shutdown: CancellationToken,
}

impl Application {
    /// Binds the listener (port 0 picks a free one) and prepares everything; nothing waits
    /// for the database or the broker here.
    pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let pool = platform::db::pool(&settings.database)?;
        let metrics = platform::metrics::Metrics::new();
        metrics.watch_pool("orders", pool.clone());
        let consumer_pool = platform::db::pool(&settings.database.for_consumer())?;
        metrics.watch_pool("orders-consumer", consumer_pool.clone());
        let order_metrics = OrderMetrics::register(&metrics);
        let readiness = Arc::new(Readiness::default());
        let handler = InventoryEvents { metrics: order_metrics.clone(), orders_topic: settings.topics.orders.clone() };
        let topics = [settings.topics.inventory.as_str()];
        let consumer = InboxConsumer::new(
            &settings.kafka,
            &settings.consumer_group,
            &topics,
            &settings.inbox,
            consumer_pool,
            handler,
        )
        .context("creating the inventory-events consumer")?
        .waiting_for(settings.database.standby_wait())
        .with_metrics(&metrics);
        let consumer_stats = consumer.stats();
        let waiters = Arc::new(Waiters::default());

        let listener = platform::service::bind(&settings.http)?;
        let port = platform::service::port_of(&listener);
        let retention_pool = pool.clone();
        let state = web::Data::new(AppState {
            pool,
            topics: settings.topics.clone(),
            waiters: Arc::clone(&waiters),
            wait_budget: Duration::from_millis(settings.wait_budget_ms),
            rate_limiter: RateLimiter::new(&settings.admission),
            waiting: WaitingCap::new(&settings.admission),
            readiness: Arc::clone(&readiness),
            broker: platform::kafka::BrokerProbe::new(&settings.kafka, Some(&settings.topics.inventory))?,
            metrics: order_metrics,
            consumer: consumer.health(),
            standbys: settings.database.standby_wait(),
        });
        let guards = Guards {
            ready: Arc::clone(&readiness),
            in_flight: Arc::new(Semaphore::new(settings.admission.max_in_flight)),
            latency: web::Data::new(LatencyWindow::new(settings.latency_alert)),
        };
        let peers = web::Data::new(Peers::new(settings.peers.clone()).context("creating the HTTP client")?);
        let verifier = web::Data::new(
            platform::auth::Verifier::from_settings(&settings.auth)
                .context("loading the keys for customers' tokens")?,
        );
        let key_reloads = verifier.clone().into_inner().watch(shutdown.clone())?;
        let dev_tokens = DevTokens::from_settings(&settings.auth).context("loading the development signing key")?;
        let admin = settings.admin.clone();
        let control = consumer.control();
        let documented = web::Data::new(DocumentedRoutes::from_openapi(&crate::openapi::ApiDoc::openapi()));
        let server = platform::service::http_server(listener, &settings.http, metrics, move |config| {
            config
                .app_data(documented.clone())
                .app_data(state.clone())
                .app_data(guards.latency.clone())
                .app_data(peers.clone())
                .app_data(verifier.clone());
            if let Some(tokens) = &dev_tokens {
                config.app_data(web::Data::from(Arc::clone(tokens))).service(crate::auth::dev_token);
            }
            configure_routes(config, &guards, &admin, &control);
        })?;
        tracing::info!(port, "order service listening");

        let token = shutdown.clone();
        let background = async move {
            if !platform::service::prepare_database(&settings.database, migrations, &readiness, &token).await {
                return Ok(());
            }
            let tasks = vec![
                consumer.into_task("inventory-events consumer", token.clone()),
                task("order status listener", waiters.listen(settings.database.url.clone(), token.clone())),
                platform::service::fallible("token key reloads", key_reloads),
                task(
                    "inbox retention",
                    messaging::inbox::retain_periodically(retention_pool, &settings.inbox, token.clone()),
                ),
            ];
            platform::service::supervise(tasks, &readiness, &token).await
        };
        Ok(Self { port, server, consumer_stats, background: Box::pin(background), shutdown })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn consumer_stats(&self) -> ConsumerMetrics {
        self.consumer_stats.clone()
    }

    /// Serves and consumes until shutdown, then lets in-flight requests and the events in
    /// hand finish. An error means a background task died.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let result = platform::service::run_until_stopped(self.server, self.background, self.shutdown).await;
        tracing::info!("order service stopped");
        result
    }
}

/// What the `/orders` middlewares hold: given when the routes are built, so a route can
/// never run without them.
#[derive(Clone)]
struct Guards {
    ready: Arc<Readiness>,
    in_flight: Arc<Semaphore>,
    latency: web::Data<LatencyWindow>,
}

fn configure_routes(
    config: &mut web::ServiceConfig,
    guards: &Guards,
    admin: &platform::admin::AdminSettings,
    control: &Arc<dyn messaging::control::ConsumerControl>,
) {
    let Guards { ready, in_flight, latency } = guards.clone();
    config
        .service(
            web::scope("/orders")
                .wrap(from_fn(move |request: ServiceRequest, next: Next<BoxBody>| {
                    require_ready(Arc::clone(&ready), request, next)
                }))
                .wrap(from_fn(move |request: ServiceRequest, next: Next<BoxBody>| {
                    limit_in_flight(Arc::clone(&in_flight), request, next)
                }))
                .service(routes::orders::place_order)
                .service(routes::orders::list_orders)
                .service(routes::orders::get_order)
                .service(routes::trace::order_trace)
                .service(routes::orders::cancel_order)
                .service(routes::orders::ship_order)
                // Outermost: the time a shopper waits, including admission's refusals.
                .wrap(from_fn(move |request: ServiceRequest, next: Next<BoxBody>| {
                    record_latency(latency.clone(), request, next)
                })),
        )
        .service(routes::page::index)
        .service(routes::page::script)
        .service(routes::page::style)
        .service(routes::page::latency)
        .service(routes::page::system_health)
        .service(routes::page::system_stock)
        .service(routes::page::get_gremlin)
        .service(routes::page::put_gremlin)
        .service(routes::health::live)
        .service(routes::health::ready)
        .route("/openapi.json", web::get().to(|| async { web::Json(crate::openapi::ApiDoc::openapi()) }));
    platform::admin::configure(config, admin, |admin| messaging::control::configure(admin, Arc::clone(control)));
}

/// The order service, for the shared start-up (`platform::service::main`).
pub struct OrderService;

impl platform::service::Service for OrderService {
    type Settings = Settings;
    const PREFIX: &'static str = "ORDER";

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
