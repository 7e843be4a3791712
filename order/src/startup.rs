//! Builds the order service on the consuming services' skeleton (`messaging::service`): its
//! handler of inventory's decisions, its state and its routes (`/orders`, the web page), and
//! two tasks of its own beside the consumer: the status listener that wakes waiting requests,
//! and the token keys' reloads. Until the database is migrated, `/orders` answers 503.

use std::sync::Arc;
use std::time::Duration;

use actix_web::body::BoxBody;
use actix_web::dev::ServiceRequest;
use actix_web::middleware::{Next, from_fn};
use actix_web::web;
use anyhow::Context as _;
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use messaging::metrics::ConsumerMetrics;
use messaging::service::{Broker, Checks, ConsumingService, Running, Skeleton};
use platform::http::DocumentedRoutes;
use platform::readiness::{Readiness, require_ready};
use platform::service::task;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi as _;

use crate::admission::{RateLimiter, WaitingCap, limit_in_flight};
use crate::auth::DevTokens;
use crate::configuration::{OrderSettings, Settings};
use crate::console::latency::LatencyWindow;
use crate::console::{Peers, record_latency};
use crate::consumer::InventoryEvents;
use crate::metrics::OrderMetrics;
use crate::routes;
use crate::state::AppState;
use crate::waiters::Waiters;

pub struct Application {
    running: Running,
    consumer_stats: ConsumerMetrics,
}

impl Application {
    /// Binds the listener (port 0 picks a free one) and prepares everything; nothing waits
    /// for the database or the broker here.
    pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let Settings { common, own } = settings;
        let skeleton = Skeleton::new::<OrderService>(&common)?;
        let order_metrics = OrderMetrics::register(skeleton.metrics());
        let handler = InventoryEvents { metrics: order_metrics.clone(), orders_topic: common.topics.orders.clone() };
        let checks =
            Checks { probe_sql: "SELECT 1 FROM orders LIMIT 1", broker: Broker::Optional, optional: Vec::new() };
        let service = skeleton.consume(&[common.topics.inventory.as_str()], handler, checks)?;
        let consumer_stats = service.stats();
        let waiters = Arc::new(Waiters::default());
        let state = web::Data::new(AppState {
            pool: service.pool().clone(),
            topics: common.topics.clone(),
            waiters: Arc::clone(&waiters),
            wait_budget: Duration::from_millis(own.wait_budget_ms),
            rate_limiter: RateLimiter::new(&own.admission),
            waiting: WaitingCap::new(&own.admission),
            metrics: order_metrics,
            standbys: common.database.standby_wait(),
        });
        let guards = Guards {
            ready: Arc::clone(service.readiness()),
            in_flight: Arc::new(Semaphore::new(own.admission.max_in_flight)),
            latency: web::Data::new(LatencyWindow::new(own.latency_alert)),
        };
        let peers = web::Data::new(Peers::new(own.peers.clone()).context("creating the HTTP client")?);
        let verifier = web::Data::new(
            platform::auth::Verifier::from_settings(&own.auth).context("loading the keys for customers' tokens")?,
        );
        let key_reloads = verifier.clone().into_inner().watch(shutdown.clone())?;
        let dev_tokens = DevTokens::from_settings(&own.auth).context("loading the development signing key")?;
        let documented = web::Data::new(DocumentedRoutes::from_openapi(&crate::openapi::ApiDoc::openapi()));
        let database_url = common.database.url.clone();
        let routes = move |config: &mut web::ServiceConfig| {
            config
                .app_data(documented.clone())
                .app_data(state.clone())
                .app_data(guards.latency.clone())
                .app_data(peers.clone())
                .app_data(verifier.clone());
            if let Some(tokens) = &dev_tokens {
                config.app_data(web::Data::from(Arc::clone(tokens))).service(crate::auth::dev_token);
            }
            configure_routes(config, &guards);
        };
        let running = service
            .task(move |token| task("order status listener", waiters.listen(database_url, token)))
            .task(move |_| platform::service::fallible("token key reloads", key_reloads))
            .serve(shutdown, routes, |_| {})?;
        Ok(Self { running, consumer_stats })
    }

    pub fn port(&self) -> u16 {
        self.running.port()
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

/// What the `/orders` middlewares hold: given when the routes are built, so a route can
/// never run without them.
#[derive(Clone)]
struct Guards {
    ready: Arc<Readiness>,
    in_flight: Arc<Semaphore>,
    latency: web::Data<LatencyWindow>,
}

fn configure_routes(config: &mut web::ServiceConfig, guards: &Guards) {
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
        .configure(crate::console::configure)
        .route("/openapi.json", web::get().to(|| async { web::Json(crate::openapi::ApiDoc::openapi()) }));
}

/// The order service, for the shared start-up (`messaging::service::Process`).
pub struct OrderService;

impl ConsumingService for OrderService {
    const NAME: &'static str = "order";
    const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/order");
    const CRASH_POINTS: &'static [&'static str] = crate::CRASH_POINTS;
    type Own = OrderSettings;

    async fn serve(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
        Application::build(settings, shutdown).await?.run_until_stopped().await
    }
}
