//! The life of a service process, shared by order, inventory and the relay: serve HTTP at
//! once with the common conventions, get the database ready in the background, run the
//! service's loops beside the server, and stop both cleanly on shutdown.

use std::future::Future;
use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use diesel_migrations::EmbeddedMigrations;
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use crate::config::{DatabaseSettings, HttpSettings};
use crate::metrics::Metrics;
use crate::readiness::Readiness;

/// How long in-flight requests get to finish after shutdown is requested.
pub const HTTP_GRACE_SECS: u64 = 10;

/// Waits for the database and applies the migrations `migrations` returns, retrying (with backoff, one log line per
/// attempt) until both succeed, and marks `readiness` ready. Returns false if shutdown came
/// first.
pub async fn prepare_database(
    settings: &DatabaseSettings,
    migrations: fn() -> EmbeddedMigrations,
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
    workers: usize,
    metrics: Arc<Metrics>,
    routes: F,
) -> std::io::Result<Server>
where
    F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
{
    let metrics = web::Data::new(metrics);
    Ok(HttpServer::new(move || {
        App::new()
            .wrap(actix_web::middleware::from_fn(crate::metrics::record_requests))
            .wrap(actix_web::middleware::Logger::new("%r %s %Dms").log_target("http"))
            .app_data(metrics.clone())
            .route("/metrics", web::get().to(crate::metrics::endpoint))
            .app_data(crate::http::json_config())
            .app_data(crate::http::query_config())
            .app_data(crate::http::path_config())
            .configure(routes.clone())
    })
    .workers(workers)
    // Shutdown is driven by the process's token, not by actix's own signal handling.
    .disable_signals()
    .shutdown_timeout(HTTP_GRACE_SECS)
    .listen(listener)?
    .run())
}

/// Runs `server` and `background` until `shutdown`, then stops accepting, lets in-flight
/// requests finish (up to [`HTTP_GRACE_SECS`]) and waits for `background` to return.
pub async fn run_until_stopped<B>(server: Server, background: B, shutdown: CancellationToken) -> anyhow::Result<()>
where
    B: Future<Output = ()> + Send + 'static,
{
    let handle = server.handle();
    let server = tokio::spawn(server);
    let background = tokio::spawn(background);
    shutdown.cancelled().await;
    handle.stop(true).await;
    server.await??;
    background.await?;
    Ok(())
}
