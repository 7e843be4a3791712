//! Builds the order service and runs it until shutdown. HTTP is served at once; the database
//! is waited for and migrated in the background, and until then `/health` and `/orders`
//! answer 503 with the reason.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::web;
use anyhow::Context as _;
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use platform::db::PgPool;
use platform::readiness::{Readiness, require_ready};
use relay::inbox::{ConsumerStats, InboxConsumer};
use schema::topics::Topics;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi as _;

use crate::admission::RateLimiter;
use crate::configuration::Settings;
use crate::consumer::InventoryEvents;
use crate::latency::LatencyWindow;
use crate::metrics::OrderMetrics;
use crate::routes;
use crate::routes::page::Peers;
use crate::waiters::Waiters;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/order");

/// What request handlers share.
pub struct AppState {
    pub pool: PgPool,
    pub topics: Topics,
    pub waiters: Arc<Waiters>,
    pub wait_budget: Duration,
    pub rate_limiter: RateLimiter,
    pub readiness: Arc<Readiness>,
    pub broker: platform::kafka::BrokerProbe,
    pub metrics: OrderMetrics,
    /// The consumer's group and what it assigned to this instance, for `/health`.
    pub consumer_group: String,
    pub group: Arc<platform::kafka::GroupContext>,
}

pub struct Application {
    port: u16,
    server: Server,
    consumer_stats: Arc<ConsumerStats>,
    background: Pin<Box<dyn Future<Output = ()> + Send>>,
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
        let topics = [settings.topics.inventory.as_str()];
        let handler = InventoryEvents { metrics: order_metrics.clone() };
        let consumer =
            InboxConsumer::for_topics(&settings.kafka, &settings.consumer_group, &topics, consumer_pool, handler)
                .context("creating the inventory-events consumer")?
                .with_metrics(&metrics)
                .with_poison_policy((&settings.inbox).into());
        let consumer_stats = consumer.stats();
        let waiters = Arc::new(Waiters::default());

        let listener = platform::service::bind(&settings.http)?;
        let port = platform::service::port_of(&listener);
        let state_pool = pool.clone();
        let state = web::Data::new(AppState {
            pool,
            topics: settings.topics.clone(),
            waiters: Arc::clone(&waiters),
            wait_budget: Duration::from_millis(settings.wait_budget_ms),
            rate_limiter: RateLimiter::new(&settings.admission),
            readiness: Arc::clone(&readiness),
            broker: platform::kafka::BrokerProbe::new(&settings.kafka, Some(&settings.topics.inventory))?,
            metrics: order_metrics,
            consumer_group: settings.consumer_group.clone(),
            group: consumer.group(),
        });
        let in_flight = web::Data::new(Arc::new(Semaphore::new(settings.admission.max_in_flight)));
        let ready = web::Data::new(Arc::clone(&readiness));
        let latency = web::Data::new(LatencyWindow::new(settings.latency_alert));
        let peers = web::Data::new(Peers::new(settings.peers.clone()).context("creating the HTTP client")?);
        let admin = settings.admin.clone();
        let server = platform::service::http_server(listener, settings.http.workers, metrics, move |config| {
            config
                .app_data(state.clone())
                .app_data(in_flight.clone())
                .app_data(ready.clone())
                .app_data(latency.clone())
                .app_data(peers.clone());
            configure_routes(config, &admin);
        })?;
        tracing::info!(port, "order service listening");

        let token = shutdown.clone();
        let purge_pool = state_pool;
        let background = async move {
            if !platform::service::prepare_database(&settings.database, || MIGRATIONS, &readiness, &token).await {
                return;
            }
            let listener = waiters.listen(settings.database.url.clone(), token.clone());
            let purge = relay::inbox::purge_periodically(
                purge_pool,
                Duration::from_secs(settings.inbox.keep_hours * 3600),
                Duration::from_secs(settings.inbox.purge_every_secs),
                token.clone(),
            );
            futures::future::join3(consumer.run(token), listener, purge).await;
        };
        Ok(Self { port, server, consumer_stats, background: Box::pin(background), shutdown })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn consumer_stats(&self) -> Arc<ConsumerStats> {
        Arc::clone(&self.consumer_stats)
    }

    /// Serves and consumes until shutdown, then lets in-flight requests and the events in
    /// hand finish.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        platform::service::run_until_stopped(self.server, self.background, self.shutdown).await?;
        tracing::info!("order service stopped");
        Ok(())
    }
}

fn configure_routes(config: &mut web::ServiceConfig, admin: &platform::admin::AdminSettings) {
    config
        .service(
            web::scope("/orders")
                .wrap(from_fn(require_ready))
                .wrap(from_fn(crate::admission::limit_in_flight))
                .service(routes::orders::place_order)
                .service(routes::orders::list_orders)
                .service(routes::orders::get_order)
                .service(routes::orders::cancel_order)
                // Outermost: the time a shopper waits, including admission's refusals.
                .wrap(from_fn(routes::page::record_latency)),
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
    platform::admin::configure(config, admin, |_| {});
}
