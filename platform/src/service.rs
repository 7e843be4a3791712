//! The life of a service process, shared by every service and the relay: parse the
//! command line, load settings, serve HTTP at once with the common conventions, get the
//! database ready in the background, run the service's tasks beside the server, and stop
//! everything cleanly on shutdown — or loudly, with a non-zero exit, when a task dies.
//!
//! One room, over 300 lines: the process's life from its command line to its exit, with the
//! tests of its supervision.

use std::future::Future;
use std::net::TcpListener;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use diesel_migrations::EmbeddedMigrations;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{DatabaseSettings, HttpSettings};
use crate::metrics::Metrics;
use crate::readiness::Readiness;

/// How long in-flight requests get to finish after shutdown is requested.
pub const HTTP_GRACE_SECS: u64 = 10;

/// A database's URL and the migration sets it needs, in order.
pub type Migrations = (String, Vec<EmbeddedMigrations>);

/// What a service is, for the shared `main` ([`main`]).
pub trait Service {
    type Settings: serde::de::DeserializeOwned + serde::Serialize + Send + 'static;
    /// Its name in `system.toml`, which gives the prefix of its environment variables
    /// (`ORDER` for `ORDER__HTTP__PORT`) and its defaults.
    const NAME: &'static str;
    /// What `migrate` applies: each database the process owns, with its migration sets in the
    /// order they apply.
    fn migrations(settings: &Self::Settings) -> Vec<Migrations>;
    /// The crash points of the crates the process runs.
    fn crash_points() -> Vec<&'static str>;
    /// Serves until `shutdown`; an error ends the process with a non-zero status.
    fn serve(settings: Self::Settings, shutdown: CancellationToken) -> impl Future<Output = anyhow::Result<()>> + Send;
}

#[derive(clap::Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Serve the HTTP API and consume events (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print every setting the process reads, with its default, as JSON, and exit: nothing
    /// is read from the environment or a file. The deployment checks read it
    /// (`scripts/check-deploy`), so a misspelt variable fails there.
    Describe,
}

/// The `main` of a service: `serve` (the default) or `migrate`.
pub async fn main<S: Service>() -> anyhow::Result<()> {
    let command = <Cli as clap::Parser>::parse().command.unwrap_or(Command::Serve);
    let prefix = &crate::system::process(S::NAME).prefix;
    if let Command::Describe = command {
        let defaults: S::Settings = crate::config::defaults()?;
        let description = serde_json::json!({ "name": S::NAME, "prefix": prefix, "settings": defaults, "variables": crate::trace::VARIABLES });
        println!("{}", serde_json::to_string_pretty(&description)?);
        return Ok(());
    }
    crate::telemetry::init(S::NAME).map_err(anyhow::Error::msg)?;
    let settings: S::Settings = crate::config::load(prefix)?;
    crate::crash::register(&S::crash_points());
    crate::crash::arm_from_env()?;
    match command {
        Command::Migrate => {
            let databases = S::migrations(&settings);
            if databases.is_empty() {
                tracing::info!("this process has no tables of its own: nothing to migrate");
            }
            for (url, migrations) in databases {
                let applied = crate::db::run_migrations(&url, migrations).await?;
                tracing::info!(database = crate::db::database_name(&url), ?applied, "migrations applied");
            }
        }
        Command::Describe => {}
        Command::Serve => {
            let served = S::serve(settings, crate::shutdown::on_signal()).await;
            // The spans of the last requests and events, before the process ends.
            crate::trace::flush();
            served?;
        }
    }
    Ok(())
}

/// Waits for the database and applies `migrations`, retrying (with backoff, one log line per
/// attempt) until both succeed, and marks `readiness` ready. Returns false if shutdown came
/// first.
pub async fn prepare_database(
    settings: &DatabaseSettings,
    migrations: fn() -> Vec<EmbeddedMigrations>,
    readiness: &Readiness,
    shutdown: &CancellationToken,
) -> bool {
    let name = crate::db::database_name(&settings.url).to_owned();
    let prepared = crate::retry::until_ready(&format!("database {name}"), shutdown, || async {
        let result = crate::db::run_migrations(&settings.url, migrations()).await;
        if let Err(error) = &result {
            readiness.waiting_for(format!("{name} database: {error}"));
        }
        result
    })
    .await;
    match prepared {
        Some(applied) => {
            tracing::info!(database = %name, ?applied, "database migrated");
            readiness.set_ready();
            true
        }
        None => false,
    }
}

/// Binds the listener (port 0 picks a free port; see [`port_of`]).
pub fn bind(settings: &HttpSettings) -> anyhow::Result<TcpListener> {
    TcpListener::bind((settings.host.as_str(), settings.port))
        .map_err(|e| anyhow::anyhow!("cannot listen on {}:{}: {e}", settings.host, settings.port))
}

pub fn port_of(listener: &TcpListener) -> u16 {
    listener.local_addr().map(|a| a.port()).unwrap_or_default()
}

/// An HTTP server with the common extractor settings, request log, request metrics and
/// `/metrics`; `routes` adds the service's own routes and state.
pub fn http_server<F>(
    listener: TcpListener,
    settings: &HttpSettings,
    metrics: Arc<Metrics>,
    routes: F,
) -> std::io::Result<Server>
where
    F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
{
    let metrics = web::Data::new(metrics);
    let body_deadline = Duration::from_millis(settings.body_deadline_ms);
    Ok(HttpServer::new(move || {
        App::new()
            .wrap(actix_web::middleware::from_fn(move |request, next| {
                crate::http::receive_body(body_deadline, request, next)
            }))
            .wrap(actix_web::middleware::from_fn(crate::http::head_as_get))
            .wrap(actix_web::middleware::from_fn(crate::metrics::record_requests))
            .wrap(actix_web::middleware::Logger::new("%r %s %Dms").log_target("http"))
            .app_data(metrics.clone())
            .route("/metrics", web::get().to(crate::metrics::endpoint))
            .route("/metrics/catalogue", web::get().to(crate::metrics::catalogue))
            .app_data(crate::http::json_config())
            .app_data(crate::http::query_config())
            .app_data(crate::http::path_config())
            .configure(routes.clone())
            .default_service(web::to(crate::http::no_route))
    })
    .workers(settings.workers)
    .max_connections((settings.max_connections / settings.workers.max(1)).max(1))
    // Shutdown is driven by the process's token, not by actix's own signal handling.
    .disable_signals()
    .shutdown_timeout(HTTP_GRACE_SECS)
    .listen(listener)?
    .run())
}

/// A named background task: it runs until shutdown, and ending earlier is a failure.
pub type Task = (String, Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>);

/// Wraps a task that has nothing to report but its end.
pub fn task<F>(name: impl Into<String>, future: F) -> Task
where
    F: Future<Output = ()> + Send + 'static,
{
    fallible(name, async move {
        future.await;
        Ok(())
    })
}

/// A task that may fail.
pub fn fallible<F>(name: impl Into<String>, future: F) -> Task
where
    F: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    (name.into(), Box::pin(future))
}

/// Runs `tasks` until `shutdown`. If one ends (returns, fails or panics) before shutdown,
/// `readiness` reports what died (`/health` answers 503 with it), shutdown is requested so
/// the others stop as usual, finishing what they hold, and the first failure is returned.
pub async fn supervise(tasks: Vec<Task>, readiness: &Readiness, shutdown: &CancellationToken) -> anyhow::Result<()> {
    let mut set = JoinSet::new();
    for (name, future) in tasks {
        set.spawn(async move { (name, future.await) });
    }
    let mut failure = None;
    while let Some(joined) = set.join_next().await {
        let problem = match joined {
            Ok((_, Ok(()))) if shutdown.is_cancelled() => continue,
            Ok((name, Ok(()))) => anyhow::anyhow!("{name} stopped before shutdown"),
            Ok((name, Err(error))) => error.context(format!("{name} failed")),
            Err(error) if error.is_panic() => anyhow::anyhow!("a background task panicked"),
            Err(error) => anyhow::anyhow!("a background task was cancelled: {error}"),
        };
        if failure.is_none() {
            let reason = format!("{problem:#}");
            tracing::error!(error = reason, "a background task died; the process stops");
            readiness.fail(reason);
            failure = Some(problem);
            shutdown.cancel();
        }
    }
    failure.map_or(Ok(()), Err)
}

/// Runs `server` and `background` until `shutdown` (which a dying task requests too, see
/// [`supervise`]), then stops accepting, lets in-flight requests finish (up to
/// [`HTTP_GRACE_SECS`]) and waits for `background`; its failure is returned (a non-zero exit).
pub async fn run_until_stopped<B>(server: Server, background: B, shutdown: CancellationToken) -> anyhow::Result<()>
where
    B: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let handle = server.handle();
    let server = tokio::spawn(server);
    let background = tokio::spawn(background);
    shutdown.cancelled().await;
    handle.stop(true).await;
    server.await??;
    background.await.context("the background tasks panicked")?
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;

    use super::{Task, fallible, task};
    use crate::readiness::Readiness;

    /// [`super::supervise`], bounded: a supervisor that waits forever fails the test.
    async fn supervise(tasks: Vec<Task>, readiness: &Readiness, shutdown: &CancellationToken) -> anyhow::Result<()> {
        tokio::time::timeout(Duration::from_secs(5), super::supervise(tasks, readiness, shutdown))
            .await
            .expect("the supervisor returned")
    }

    /// A task that runs until shutdown, as a consumer does.
    fn until_shutdown(shutdown: &CancellationToken) -> Task {
        let shutdown = shutdown.clone();
        task("steady", async move { shutdown.cancelled().await })
    }

    #[tokio::test]
    async fn tasks_that_end_at_shutdown_are_a_clean_stop() {
        let (readiness, shutdown) = (Readiness::default(), CancellationToken::new());
        readiness.set_ready();
        let tasks = vec![until_shutdown(&shutdown), until_shutdown(&shutdown)];
        let stopper = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            stopper.cancel();
        });
        assert!(supervise(tasks, &readiness, &shutdown).await.is_ok());
        assert!(readiness.is_ready() && readiness.failure().is_none());
    }

    #[tokio::test]
    async fn a_task_that_returns_early_stops_the_process_and_fails_readiness() {
        let (readiness, shutdown) = (Readiness::default(), CancellationToken::new());
        readiness.set_ready();
        let tasks = vec![until_shutdown(&shutdown), task("consumer", async {})];
        let error = supervise(tasks, &readiness, &shutdown).await.expect_err("an early end is a failure");
        assert!(error.to_string().contains("consumer stopped before shutdown"), "{error}");
        assert!(shutdown.is_cancelled(), "the other tasks were asked to stop");
        assert!(!readiness.is_ready());
        assert!(readiness.failure().is_some_and(|f| f.contains("consumer")));
        readiness.set_ready();
        assert!(!readiness.is_ready(), "a failed process never becomes ready again");
    }

    #[tokio::test]
    async fn a_failing_or_panicking_task_is_a_failure_too() {
        let (readiness, shutdown) = (Readiness::default(), CancellationToken::new());
        let failing = vec![until_shutdown(&shutdown), fallible("relay", async { anyhow::bail!("lost") })];
        let error = supervise(failing, &readiness, &shutdown).await.expect_err("failure");
        assert!(format!("{error:#}").contains("relay failed: lost"), "{error:#}");

        let shutdown = CancellationToken::new();
        let panicking = vec![until_shutdown(&shutdown), task("purge", async { panic!("bug") })];
        let error = supervise(panicking, &readiness, &shutdown).await.expect_err("a panic is a failure");
        assert!(error.to_string().contains("panicked"), "{error}");
    }
}
