//! Builds the inventory service (database, migrations, HTTP listener, consumer) and runs it
//! until shutdown.

use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::web;
use anyhow::Context as _;
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use platform::db::PgPool;
use rdkafka::consumer::Consumer as _;
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
}

pub struct Application {
    port: u16,
    server: Server,
    consumer: InboxConsumer<OrderEvents>,
    shutdown: CancellationToken,
    gremlin: Arc<Gremlin>,
}

impl Application {
    /// Waits for the database, applies migrations, binds the listener (port 0 picks a free
    /// one) and subscribes the consumer. Returns `None` if shutdown came first.
    pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Option<Self>> {
        let Some(pool) = platform::service::prepare_database(&settings.database, MIGRATIONS, &shutdown).await? else {
            return Ok(None);
        };
        let kafka = platform::kafka::consumer(&settings.kafka, &settings.consumer_group)?;
        kafka.subscribe(&[&settings.topics.orders]).context("subscribing to order events")?;
        let gremlin = Arc::new(Gremlin::new(settings.gremlin));
        let handler = OrderEvents { topic: settings.topics.inventory.clone(), gremlin: Arc::clone(&gremlin) };
        let consumer = InboxConsumer::new(kafka, pool.clone(), handler);

        let listener = platform::service::bind(&settings.http)?;
        let port = platform::service::port_of(&listener);
        let state = web::Data::new(AppState { pool, gremlin: Arc::clone(&gremlin) });
        let admin = settings.admin.clone();
        let server = platform::service::http_server(listener, settings.http.workers, move |config| {
            config.app_data(state.clone());
            configure_routes(config, &admin);
        })?;
        tracing::info!(port, "inventory service listening");
        Ok(Some(Self { port, server, consumer, shutdown, gremlin }))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn gremlin(&self) -> Arc<Gremlin> {
        Arc::clone(&self.gremlin)
    }

    pub fn consumer_stats(&self) -> Arc<ConsumerStats> {
        self.consumer.stats()
    }

    /// Serves and consumes until shutdown, then lets in-flight requests and the event in
    /// hand finish.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let consumer = self.consumer.run(self.shutdown.clone());
        platform::service::run_until_stopped(self.server, consumer, self.shutdown).await?;
        tracing::info!("inventory service stopped");
        Ok(())
    }
}

fn configure_routes(config: &mut web::ServiceConfig, admin: &platform::admin::AdminSettings) {
    config
        .service(
            web::scope("/stock")
                .wrap(from_fn(routes::gremlin_delay))
                .service(routes::list_stock)
                .service(routes::get_stock),
        )
        .service(routes::live)
        .service(routes::ready)
        .route("/openapi.json", web::get().to(|| async { web::Json(routes::ApiDoc::openapi()) }));
    platform::admin::configure(config, admin, |admin| {
        admin
            .route("/gremlin", web::get().to(routes::get_gremlin))
            .route("/gremlin", web::put().to(routes::put_gremlin));
    });
}
