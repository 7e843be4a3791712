//! Builds the notifications service and runs it until shutdown: HTTP at once; the database
//! waited for and migrated in the background; then the events consumer, the sender and the
//! inbox retention as supervised tasks (one that dies stops the process).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::web;
use anyhow::Context as _;
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use messaging::inbox::InboxConsumer;
use platform::readiness::Readiness;
use platform::service::task;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi as _;

use crate::configuration::Settings;
use crate::consumer::OrderOutcomes;
use crate::mail::{MailMetrics, Mailer, Sender};
use crate::routes::{self, AppState};

/// The notifications database's own tables (the messaging tables come first).
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/notifications");

pub fn migrations() -> Vec<EmbeddedMigrations> {
    vec![messaging::MIGRATIONS, MIGRATIONS]
}

pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
    background: Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>,
    shutdown: CancellationToken,
}

impl Application {
    /// Binds the listener (port 0 picks a free one) and prepares everything; nothing waits
    /// for the database, the broker or the SMTP server here.
    pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let verifier = web::Data::new(platform::auth::Verifier::from_settings(&settings.auth)?);
        let key_reloads = verifier.clone().into_inner().watch(shutdown.clone())?;
        let mailer = Arc::new(Mailer::new(&settings.mail)?);
        let pool = platform::db::pool(&settings.database)?;
        let metrics = platform::metrics::Metrics::new();
        metrics.watch_pool("notifications", pool.clone());
        let consumer_pool = platform::db::pool(&settings.database.for_consumer())?;
        metrics.watch_pool("notifications-consumer", consumer_pool.clone());
        // The senders' own pool. A connection opened while an HTTP worker serves a request
        // (`/health`, `GET /notifications`) is driven by that worker's runtime and closes when
        // the worker stops at shutdown: a sender holding one between the SMTP server's
        // acceptance and its commit would lose the record and send the message again.
        let background_pool = platform::db::pool(&platform::config::DatabaseSettings {
            pool_size: settings.mail.senders.max(1) + 2,
            ..settings.database.clone()
        })?;
        metrics.watch_pool("notifications-sender", background_pool.clone());
        let readiness = Arc::new(Readiness::default());
        let owed = Arc::new(Notify::new());
        let topics = [settings.topics.orders.as_str(), settings.topics.inventory.as_str()];
        let consumer = InboxConsumer::new(
            &settings.kafka,
            &settings.consumer_group,
            &topics,
            &settings.inbox,
            consumer_pool,
            OrderOutcomes {
                owed: Arc::clone(&owed),
                stale_after: chrono::TimeDelta::hours(settings.mail.stale_after_hours.into()),
            },
        )
        .context("creating the events consumer")?
        .waiting_for(settings.database.standby_wait())
        .with_metrics(&metrics);
        let mail_metrics = MailMetrics::default();
        mail_metrics.register(&metrics);
        let sender = Sender {
            pool: background_pool.clone(),
            mailer: Arc::clone(&mailer),
            settings: settings.mail.clone(),
            owed,
            metrics: mail_metrics,
        };

        let listener = platform::service::bind(&settings.http)?;
        let port = platform::service::port_of(&listener);
        let retention_pool = background_pool;
        let state = web::Data::new(AppState {
            pool,
            mailer,
            readiness: Arc::clone(&readiness),
            broker: platform::kafka::BrokerProbe::new(&settings.kafka, Some(&settings.topics.inventory))?,
            consumer: consumer.health(),
        });
        let admin = settings.admin.clone();
        let control = consumer.control();
        let documented = web::Data::new(platform::http::DocumentedRoutes::from_openapi(&routes::ApiDoc::openapi()));
        let server = platform::service::http_server(listener, &settings.http, metrics, move |config| {
            config
                .app_data(state.clone())
                .app_data(verifier.clone())
                .app_data(documented.clone())
                .service(routes::for_order)
                .service(routes::live)
                .service(routes::ready)
                .route("/openapi.json", web::get().to(|| async { web::Json(routes::ApiDoc::openapi()) }));
            platform::admin::configure(config, &admin, |admin| {
                messaging::control::configure(admin, Arc::clone(&control));
            });
        })?;
        tracing::info!(port, "notifications service listening");

        let token = shutdown.clone();
        let background = async move {
            if !platform::service::prepare_database(&settings.database, migrations, &readiness, &token).await {
                return Ok(());
            }
            let tasks = vec![
                consumer.into_task("events consumer", token.clone()),
                platform::service::fallible("sender", sender.run(token.clone())),
                platform::service::fallible("token key reloads", key_reloads),
                task(
                    "inbox retention",
                    messaging::inbox::retain_periodically(retention_pool, &settings.inbox, token.clone()),
                ),
            ];
            platform::service::supervise(tasks, &readiness, &token).await
        };
        Ok(Self { port, server, background: Box::pin(background), shutdown })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves, consumes and sends until shutdown. An error means a background task died.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let result = platform::service::run_until_stopped(self.server, self.background, self.shutdown).await;
        tracing::info!("notifications service stopped");
        result
    }
}

/// The notifications service, for the shared start-up (`platform::service::main`).
pub struct NotificationsService;

impl platform::service::Service for NotificationsService {
    type Settings = Settings;
    const PREFIX: &'static str = "NOTIFICATIONS";

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
