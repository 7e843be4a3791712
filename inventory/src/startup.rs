//! Builds the inventory service and runs it until shutdown. HTTP is served at once; the
//! database is waited for and migrated in the background, and until then `/health` and
//! `/stock` answer 503 with the reason.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::web;
use anyhow::Context as _;
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use platform::db::PgPool;
use platform::readiness::{Readiness, require_ready};
use relay::inbox::{ConsumerStats, InboxConsumer};
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi as _;

use crate::configuration::Settings;
use crate::consumer::OrderEvents;
use crate::gremlin::Gremlin;
use crate::routes;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/inventory");

/// What request handlers share.
pub struct AppState {
    pub pool: PgPool,
    pub gremlin: Arc<Gremlin>,
    pub readiness: Arc<Readiness>,
    pub broker: platform::kafka::BrokerProbe,
    /// The consumer's group and what it assigned to this instance, for `/health`.
    pub consumer_group: String,
    pub group: Arc<platform::kafka::GroupContext>,
}

pub struct Application {
    port: u16,
    server: Server,
    consumer_stats: Arc<ConsumerStats>,
    gremlin: Arc<Gremlin>,
    background: Pin<Box<dyn Future<Output = ()> + Send>>,
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
        let consumer =
            InboxConsumer::for_topics(&settings.kafka, &settings.consumer_group, &topics, consumer_pool, handler)
                .context("creating the order-events consumer")?
                .with_metrics(&metrics)
                .with_poison_policy((&settings.inbox).into());
        let consumer_stats = consumer.stats();

        let listener = platform::service::bind(&settings.http)?;
        let port = platform::service::port_of(&listener);
        let purge_pool = pool.clone();
        let state = web::Data::new(AppState {
            pool,
            gremlin: Arc::clone(&gremlin),
            readiness: Arc::clone(&readiness),
            broker: platform::kafka::BrokerProbe::new(&settings.kafka, Some(&settings.topics.orders))?,
            consumer_group: settings.consumer_group.clone(),
            group: consumer.group(),
        });
        let ready = web::Data::new(Arc::clone(&readiness));
        let admin = settings.admin.clone();
        let server = platform::service::http_server(listener, settings.http.workers, metrics, move |config| {
            config.app_data(state.clone()).app_data(ready.clone());
            configure_routes(config, &admin);
        })?;
        tracing::info!(port, "inventory service listening");

        let token = shutdown.clone();
        let background = async move {
            if platform::service::prepare_database(&settings.database, || MIGRATIONS, &readiness, &token).await {
                let purge = relay::inbox::purge_periodically(
                    purge_pool,
                    std::time::Duration::from_secs(settings.inbox.keep_hours * 3600),
                    std::time::Duration::from_secs(settings.inbox.purge_every_secs),
                    token.clone(),
                );
                futures::future::join(consumer.run(token), purge).await;
            }
        };
        Ok(Self { port, server, consumer_stats, gremlin, background: Box::pin(background), shutdown })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn gremlin(&self) -> Arc<Gremlin> {
        Arc::clone(&self.gremlin)
    }

    pub fn consumer_stats(&self) -> Arc<ConsumerStats> {
        Arc::clone(&self.consumer_stats)
    }

    /// Serves and consumes until shutdown, then lets in-flight requests and the events in
    /// hand finish.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        platform::service::run_until_stopped(self.server, self.background, self.shutdown).await?;
        tracing::info!("inventory service stopped");
        Ok(())
    }
}

fn configure_routes(config: &mut web::ServiceConfig, admin: &platform::admin::AdminSettings) {
    config
        .service(
            web::scope("/stock")
                .wrap(from_fn(routes::gremlin_delay))
                .wrap(from_fn(require_ready))
                .service(routes::list_stock)
                .service(routes::get_stock),
        )
        .service(routes::live)
        .service(routes::ready)
        .route("/openapi.json", web::get().to(|| async { web::Json(routes::ApiDoc::openapi()) }));
    platform::admin::configure(config, admin, |admin| {
        admin
            .route("/gremlin", web::get().to(routes::get_gremlin))
            .route("/gremlin", web::put().to(routes::put_gremlin))
            .route("/products/{sku}", web::put().to(routes::add_product));
    });
}
