//! Builds the notifications service on the consuming services' skeleton (`messaging::service`):
//! its handler of both topics' outcomes, the sender as a task of its own beside the consumer,
//! the token keys' reloads, and its one route. The SMTP server is reported in `/health` but not
//! required: while it is down, messages wait in the database.

use std::sync::Arc;

use actix_web::web;
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use messaging::service::{Broker, Checks, ConsumingService, Probe, Running, Skeleton};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi as _;

use crate::configuration::{NotificationsSettings, Settings};
use crate::consumer::OrderOutcomes;
use crate::mail::{MailMetrics, Mailer, Sender};
use crate::routes::{self, AppState};

pub struct Application {
    running: Running,
}

impl Application {
    /// Binds the listener (port 0 picks a free one) and prepares everything; nothing waits
    /// for the database, the broker or the SMTP server here.
    pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let Settings { common, own } = settings;
        let verifier = web::Data::new(platform::auth::Verifier::from_settings(&own.auth)?);
        let key_reloads = verifier.clone().into_inner().watch(shutdown.clone())?;
        let mailer = Arc::new(Mailer::new(&own.mail)?);
        let skeleton = Skeleton::new::<NotificationsService>(&common)?;
        // The senders' own pool. A connection opened while an HTTP worker serves a request
        // (`/health`, `GET /notifications`) is driven by that worker's runtime and closes when
        // the worker stops at shutdown: a sender holding one between the SMTP server's
        // acceptance and its commit would lose the record and send the message again.
        let sender_pool = platform::db::pool(&platform::config::DatabaseSettings {
            pool_size: own.mail.senders.max(1) + 2,
            ..common.database.clone()
        })?;
        skeleton.metrics().watch_pool("notifications-sender", sender_pool.clone());
        let mail_metrics = MailMetrics::default();
        mail_metrics.register(skeleton.metrics());
        let owed = Arc::new(Notify::new());
        let handler = OrderOutcomes {
            owed: Arc::clone(&owed),
            stale_after: chrono::TimeDelta::hours(own.mail.stale_after_hours.into()),
        };
        let checks = Checks {
            probe_sql: "SELECT 1 FROM notifications LIMIT 1",
            broker: Broker::Required,
            optional: vec![smtp_check(Arc::clone(&mailer))],
        };
        let topics = [common.topics.orders.as_str(), common.topics.inventory.as_str()];
        let service = skeleton.consume(&topics, handler, checks)?;
        let sender = Sender { pool: sender_pool, mailer, settings: own.mail.clone(), owed, metrics: mail_metrics };
        let state = web::Data::new(AppState { pool: service.pool().clone() });
        let documented = web::Data::new(platform::http::DocumentedRoutes::from_openapi(&routes::ApiDoc::openapi()));
        let running = service
            .task(move |token| platform::service::fallible("sender", sender.run(token)))
            .task(move |_| platform::service::fallible("token key reloads", key_reloads))
            .serve(
                shutdown,
                move |config| {
                    config
                        .app_data(state.clone())
                        .app_data(verifier.clone())
                        .app_data(documented.clone())
                        .service(routes::for_order)
                        .route("/openapi.json", web::get().to(|| async { web::Json(routes::ApiDoc::openapi()) }));
                },
                |_| {},
            )?;
        Ok(Self { running })
    }

    pub fn port(&self) -> u16 {
        self.running.port()
    }

    /// Serves, consumes and sends until shutdown. An error means a background task died.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.running.run_until_stopped().await
    }
}

/// Whether the SMTP server answers (reported in `/health`, not required).
fn smtp_check(mailer: Arc<Mailer>) -> Probe {
    Arc::new(move || {
        let mailer = Arc::clone(&mailer);
        Box::pin(async move {
            platform::health::check("smtp server", async { mailer.reachable().await.map_err(|e| e.to_string()) }).await
        })
    })
}

/// The notifications service, for the shared start-up (`messaging::service::Process`).
pub struct NotificationsService;

impl ConsumingService for NotificationsService {
    const NAME: &'static str = "notifications";
    const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/notifications");
    const CRASH_POINTS: &'static [&'static str] = crate::CRASH_POINTS;
    type Own = NotificationsSettings;

    async fn serve(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
        Application::build(settings, shutdown).await?.run_until_stopped().await
    }
}
