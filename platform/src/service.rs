//! The life of a service process, shared by order, inventory and the relay: get its database
//! ready, serve HTTP with the common conventions, run a background loop beside it, and stop
//! both cleanly on shutdown.

use std::future::Future;
use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use diesel_migrations::EmbeddedMigrations;
use tokio_util::sync::CancellationToken;

use crate::config::{DatabaseSettings, HttpSettings};
use crate::db::PgPool;

/// How long in-flight requests get to finish after shutdown is requested.
pub const HTTP_GRACE_SECS: u64 = 10;

/// Waits for the database, applies `migrations`, and returns a pool. `None` means shutdown
/// came first.
pub async fn prepare_database(
    settings: &DatabaseSettings,
    migrations: EmbeddedMigrations,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<PgPool>> {
    if crate::db::wait_until_reachable(settings, shutdown).await.is_none() {
        return Ok(None);
    }
    let applied = crate::db::run_migrations(&settings.url, migrations).await?;
    tracing::info!(database = crate::db::database_name(&settings.url), ?applied, "database migrated");
    Ok(Some(crate::db::pool(settings)?))
}

/// Binds the listener (port 0 picks a free port; see [`port_of`]).
pub fn bind(settings: &HttpSettings) -> anyhow::Result<TcpListener> {
    TcpListener::bind((settings.host.as_str(), settings.port))
        .map_err(|e| anyhow::anyhow!("cannot listen on {}:{}: {e}", settings.host, settings.port))
}

pub fn port_of(listener: &TcpListener) -> u16 {
    listener.local_addr().map(|a| a.port()).unwrap_or_default()
}

/// An HTTP server with the common extractor settings and request log; `routes` adds the
/// service's own routes and state.
pub fn http_server<F>(listener: TcpListener, workers: usize, routes: F) -> std::io::Result<Server>
where
    F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
{
    Ok(HttpServer::new(move || {
        App::new()
            .wrap(actix_web::middleware::Logger::new("%r %s %Dms").log_target("http"))
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
