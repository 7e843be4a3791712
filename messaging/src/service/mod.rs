//! One skeleton for every service that consumes events (order, inventory, notifications), so
//! that reading a service is reading its handler and its routes. The skeleton makes what they
//! all have and starts it the same way:
//!
//! - the settings every one has ([`ServiceSettings`]), beside the service's own;
//! - the pools (requests' and the consumer's), `/metrics`, readiness;
//! - the inbox consumer with its standby wait and metrics, the operator's controls under
//!   `/admin/consumer`, `/health` and `/health/live` ([`health`]);
//! - HTTP served at once; in the background the database waited for and migrated (messaging's
//!   tables, then the service's own), then the consumer, the inbox retention and the service's
//!   own tasks, supervised: one that dies stops the process with an error.
//!
//! A service writes [`ConsumingService`] (its name, defaults, tables and how it is built) and,
//! in its `serve`: [`Skeleton::new`] → its handler → [`Skeleton::consume`] → its state and
//! [`Consuming::serve`] with its routes.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::web;
use anyhow::Context as _;
use diesel_migrations::EmbeddedMigrations;
use platform::db::PgPool;
use platform::metrics::Metrics;
use platform::readiness::Readiness;
use platform::service::Task;
use tokio_util::sync::CancellationToken;

use crate::inbox::{Handler, InboxConsumer};
use crate::metrics::ConsumerMetrics;

pub mod health;
mod settings;

pub use health::{Broker, Health, Probe};
pub use settings::{ServiceSettings, Settings};

/// What a consuming service is: its name, where it runs unless configured, its own settings
/// and tables, and how it is built.
pub trait ConsumingService: Sized + Send + 'static {
    /// Its name in `system.toml`, which gives the prefix of its environment variables, and
    /// its port, database and consumer group unless configured.
    const NAME: &'static str;
    /// Its own tables; the messaging tables are applied before them ([`migrations`]).
    const MIGRATIONS: EmbeddedMigrations;
    /// Its crash points; the messaging ones are added.
    const CRASH_POINTS: &'static [&'static str];
    /// Its own settings, read under the same prefix as [`ServiceSettings`].
    type Own: serde::de::DeserializeOwned + serde::Serialize + Clone + std::fmt::Debug + Send + Sync + 'static;
    /// Serves until `shutdown`; an error ends the process with a non-zero status.
    fn serve(settings: Settings<Self>, shutdown: CancellationToken) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Every migration a service's database needs, in order: messaging's, then its own.
pub fn migrations<S: ConsumingService>() -> Vec<EmbeddedMigrations> {
    vec![crate::MIGRATIONS, S::MIGRATIONS]
}

/// The `main` of a consuming service's process: `serve` (the default) or `migrate`.
pub async fn main<S: ConsumingService>() -> anyhow::Result<()> {
    platform::service::main::<Process<S>>().await
}

/// A consuming service as a process, for the shared start-up (`platform::service::main`).
pub struct Process<S>(PhantomData<S>);

impl<S: ConsumingService> platform::service::Service for Process<S> {
    type Settings = Settings<S>;
    const NAME: &'static str = S::NAME;

    fn migrations(settings: &Settings<S>) -> Vec<platform::service::Migrations> {
        vec![(settings.common.database.url.clone(), migrations::<S>())]
    }

    fn crash_points() -> Vec<&'static str> {
        [S::CRASH_POINTS, crate::CRASH_POINTS].concat()
    }

    async fn serve(settings: Settings<S>, shutdown: CancellationToken) -> anyhow::Result<()> {
        S::serve(settings, shutdown).await
    }
}

/// What every consuming service has before its consumer: pools, metrics, readiness.
pub struct Skeleton {
    name: &'static str,
    migrations: fn() -> Vec<EmbeddedMigrations>,
    settings: ServiceSettings,
    pool: PgPool,
    consumer_pool: PgPool,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
}

impl Skeleton {
    /// Prepares service `S` (nothing waits for the database or the broker here). The pools
    /// show on `/metrics` as `<database>` and `<database>-consumer`.
    pub fn new<S: ConsumingService>(settings: &ServiceSettings) -> anyhow::Result<Self> {
        let metrics = Metrics::new();
        let database = platform::system::process(S::NAME).database();
        let pool = platform::db::pool(&settings.database)?;
        metrics.watch_pool(database, pool.clone());
        let consumer_pool = platform::db::pool(&settings.database.for_consumer())?;
        metrics.watch_pool(&format!("{database}-consumer"), consumer_pool.clone());
        Ok(Self {
            name: S::NAME,
            migrations: migrations::<S>,
            settings: settings.clone(),
            pool,
            consumer_pool,
            metrics,
            readiness: Arc::new(Readiness::default()),
        })
    }

    /// The pool for requests (and anything else that is not the consumer).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Where the service registers its own metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Ready once the database is migrated; failed for good once a background task died.
    pub fn readiness(&self) -> &Arc<Readiness> {
        &self.readiness
    }

    /// The consumer of `topics` (the service's group), applying events with `handler`, and
    /// the `/health` that `checks` describes.
    pub fn consume<H: Handler>(self, topics: &[&str], handler: H, checks: Checks) -> anyhow::Result<Consuming<H>> {
        let settings = &self.settings;
        let consumer = InboxConsumer::new(
            &settings.kafka,
            &settings.consumer_group,
            topics,
            &settings.inbox,
            self.consumer_pool.clone(),
            handler,
        )
        .with_context(|| format!("creating the consumer of {}", topics.join(", ")))?
        .waiting_for(settings.database.standby_wait())
        .with_metrics(&self.metrics);
        let health = Health {
            database: format!("{} database", self.name),
            probe_sql: checks.probe_sql,
            pool: self.pool.clone(),
            readiness: Arc::clone(&self.readiness),
            broker: platform::kafka::BrokerProbe::new(&settings.kafka, topics.first().copied())?,
            need_broker: checks.broker,
            consumer: consumer.health(),
            optional: checks.optional,
        };
        let name = format!("{} consumer", topics.join(" and "));
        Ok(Consuming { skeleton: self, consumer, name, health: web::Data::new(health), tasks: Vec::new() })
    }
}

/// What `/health` checks beyond what every service has.
pub struct Checks {
    /// A query against one of the service's own tables: a database without its migrations
    /// is not ready.
    pub probe_sql: &'static str,
    pub broker: Broker,
    /// Dependencies reported but not required.
    pub optional: Vec<Probe>,
}

/// A task started once the database is ready, given the process's shutdown token.
type Starter = Box<dyn FnOnce(CancellationToken) -> Task + Send>;

/// A service with its consumer, before it serves.
pub struct Consuming<H> {
    skeleton: Skeleton,
    consumer: InboxConsumer<H>,
    name: String,
    health: web::Data<Health>,
    tasks: Vec<Starter>,
}

impl<H: Handler> Consuming<H> {
    pub fn pool(&self) -> &PgPool {
        &self.skeleton.pool
    }

    pub fn readiness(&self) -> &Arc<Readiness> {
        &self.skeleton.readiness
    }

    /// The service's `/health`, for a page that shows it elsewhere.
    pub fn health(&self) -> web::Data<Health> {
        self.health.clone()
    }

    /// What the consumer did so far (the counts `/metrics` shows).
    pub fn stats(&self) -> ConsumerMetrics {
        self.consumer.stats()
    }

    /// Runs one more supervised task once the database is ready (beside the consumer and the
    /// inbox retention).
    pub fn task(mut self, start: impl FnOnce(CancellationToken) -> Task + Send + 'static) -> Self {
        self.tasks.push(Box::new(start));
        self
    }

    /// Binds the listener (port 0 picks a free one) and serves `routes` with `/health`,
    /// `/metrics` and, when an admin token is set, `/admin/*` with `admin`'s routes beside
    /// the crash points and the consumer's controls. The consumer and the tasks start in the
    /// background once the database is migrated.
    pub fn serve<R, A>(self, shutdown: CancellationToken, routes: R, admin: A) -> anyhow::Result<Running>
    where
        R: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
        A: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
    {
        let Self { skeleton, consumer, name, health, tasks } = self;
        let Skeleton { name: service, migrations, settings, pool, metrics, readiness, .. } = skeleton;
        let listener = platform::service::bind(&settings.http)?;
        let port = platform::service::port_of(&listener);
        let control = consumer.control();
        let admin_settings = settings.admin.clone();
        let server = platform::service::http_server(listener, &settings.http, metrics, move |config| {
            config.app_data(health.clone()).service(health::live).service(health::ready);
            routes(config);
            platform::admin::configure(config, &admin_settings, |scope| {
                crate::control::configure(scope, Arc::clone(&control));
                admin(scope);
            });
        })?;
        tracing::info!(port, "{service} service listening");

        let token = shutdown.clone();
        let background = async move {
            if !platform::service::prepare_database(&settings.database, migrations, &readiness, &token).await {
                return Ok(());
            }
            let mut running = vec![
                consumer.into_task(&name, token.clone()),
                platform::service::task(
                    "inbox retention",
                    crate::inbox::retain_periodically(pool, &settings.inbox, token.clone()),
                ),
            ];
            running.extend(tasks.into_iter().map(|start| start(token.clone())));
            platform::service::supervise(running, &readiness, &token).await
        };
        Ok(Running { service, port, server, background: Box::pin(background), shutdown })
    }
}

/// A service serving, its background about to start.
pub struct Running {
    service: &'static str,
    port: u16,
    server: Server,
    background: Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>,
    shutdown: CancellationToken,
}

impl Running {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves and consumes until shutdown, then lets in-flight requests and the events in
    /// hand finish. An error means a background task died.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let result = platform::service::run_until_stopped(self.server, self.background, self.shutdown).await;
        tracing::info!("{} service stopped", self.service);
        result
    }
}
