//! Builds the order service (database, migrations, HTTP listener, consumer) and runs it
//! until shutdown.

use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::web;
use anyhow::Context as _;
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use platform::db::PgPool;
use rdkafka::consumer::Consumer as _;
use relay::inbox::{ConsumerStats, InboxConsumer};
use schema::topics::Topics;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi as _;

use crate::admission::RateLimiter;
use crate::configuration::Settings;
use crate::consumer::InventoryEvents;
use crate::routes;
use crate::waiters::Waiters;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/order");

/// What request handlers share.
pub struct AppState {
    pub pool: PgPool,
    pub topics: Topics,
    pub waiters: Arc<Waiters>,
    pub wait_budget: Duration,
    pub rate_limiter: RateLimiter,
}

pub struct Application {
    port: u16,
    server: Server,
    consumer: InboxConsumer<InventoryEvents>,
    listener: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    shutdown: CancellationToken,
}

impl Application {
    /// Waits for the database, applies migrations, binds the listener (port 0 picks a free
    /// one) and subscribes the consumer. Returns `None` if shutdown came first.
    pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Option<Self>> {
        let Some(pool) = platform::service::prepare_database(&settings.database, MIGRATIONS, &shutdown).await? else {
            return Ok(None);
        };
        let kafka = platform::kafka::consumer(&settings.kafka, &settings.consumer_group)?;
        kafka.subscribe(&[&settings.topics.inventory]).context("subscribing to inventory events")?;
        let consumer = InboxConsumer::new(kafka, pool.clone(), InventoryEvents);

        let listener = platform::service::bind(&settings.http)?;
        let port = platform::service::port_of(&listener);
        let waiters = Arc::new(Waiters::default());
        let state = web::Data::new(AppState {
            pool,
            topics: settings.topics.clone(),
            waiters: Arc::clone(&waiters),
            wait_budget: Duration::from_millis(settings.wait_budget_ms),
            rate_limiter: RateLimiter::new(&settings.admission),
        });
        let in_flight = web::Data::new(Arc::new(Semaphore::new(settings.admission.max_in_flight)));
        let admin = settings.admin.clone();
        let server = platform::service::http_server(listener, settings.http.workers, move |config| {
            config.app_data(state.clone()).app_data(in_flight.clone());
            configure_routes(config, &admin);
        })?;
        let listener = waiters.listen(settings.database.url.clone(), shutdown.clone());
        tracing::info!(port, "order service listening");
        Ok(Some(Self { port, server, consumer, listener: Box::pin(listener), shutdown }))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn consumer_stats(&self) -> Arc<ConsumerStats> {
        self.consumer.stats()
    }

    /// Serves and consumes until shutdown, then lets in-flight requests and the event in
    /// hand finish.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let background = futures::future::join(self.consumer.run(self.shutdown.clone()), self.listener);
        platform::service::run_until_stopped(
            self.server,
            async move {
                background.await;
            },
            self.shutdown,
        )
        .await?;
        tracing::info!("order service stopped");
        Ok(())
    }
}

fn configure_routes(config: &mut web::ServiceConfig, admin: &platform::admin::AdminSettings) {
    config
        .service(
            web::scope("/orders")
                .wrap(from_fn(crate::admission::limit_in_flight))
                .service(routes::orders::place_order)
                .service(routes::orders::list_orders)
                .service(routes::orders::get_order)
                .service(routes::orders::cancel_order),
        )
        .service(routes::health::live)
        .service(routes::health::ready)
        .route("/openapi.json", web::get().to(|| async { web::Json(crate::openapi::ApiDoc::openapi()) }));
    platform::admin::configure(config, admin, |_| {});
}
