//! Postgres: a connection pool per service, waiting for the server at start-up, and
//! migrations applied under an advisory lock so that two instances starting together do
//! not race.

use diesel::RunQueryDsl as _;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::{BuildError, Object, Pool};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection as _};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness};
use futures::future::BoxFuture;

use crate::config::DatabaseSettings;

pub type PgPool = Pool<AsyncPgConnection>;
pub type PooledConnection = Object<AsyncPgConnection>;

/// Builds a pool; connections are opened lazily, so this does not touch the network.
pub fn pool(settings: &DatabaseSettings) -> Result<PgPool, BuildError> {
    // A connection handed out again is checked for an open transaction and a known failure,
    // not with a `SELECT 1` round trip: that ping cost one round trip per checkout, about a
    // fifth of the statements an order makes. A connection the server dropped since fails
    // its first query (answered as any database error is) and is then discarded.
    let mut config = ManagerConfig::default();
    config.recycling_method = RecyclingMethod::Fast;
    if let Some(timeout_ms) = settings.statement_timeout_ms {
        config.custom_setup = Box::new(move |url| {
            let url = url.to_owned();
            Box::pin(async move {
                let mut conn = AsyncPgConnection::establish(&url).await?;
                conn.batch_execute(&format!("SET statement_timeout = {timeout_ms}"))
                    .await
                    .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                Ok(conn)
            })
        });
    }
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(&settings.url, config);
    Pool::builder(manager)
        .max_size(settings.pool_size)
        // A request must never wait forever for a connection.
        .wait_timeout(Some(std::time::Duration::from_secs(5)))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
}

/// A connection from `pool`, waiting at most `within` for one to be free: a request with a
/// deadline refuses (503, nothing written) rather than queueing past it.
pub async fn get_within(
    pool: &PgPool,
    within: std::time::Duration,
) -> Result<PooledConnection, diesel_async::pooled_connection::deadpool::PoolError> {
    let timeouts = deadpool::managed::Timeouts { wait: Some(within), ..pool.timeouts() };
    pool.timeout_get(&timeouts).await
}

/// Errors while applying migrations.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("cannot connect to apply migrations: {0}")]
    Connect(#[from] diesel::ConnectionError),
    #[error("cannot take the migration lock: {0}")]
    Lock(#[from] diesel::result::Error),
    #[error("a migration failed: {0}")]
    Migration(String),
    #[error("the migration task panicked")]
    Panicked,
}

/// Applies every pending migration of each set, in order (the messaging tables, then the
/// service's own). Holds a session advisory lock while doing so, so that several instances
/// of a service can start at the same moment.
pub async fn run_migrations(url: &str, sets: Vec<EmbeddedMigrations>) -> Result<Vec<String>, MigrationError> {
    let connection = AsyncPgConnection::establish(url).await?;
    // The harness is synchronous; the wrapper drives the async connection from a blocking thread.
    tokio::task::spawn_blocking(move || {
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::from(connection);
        diesel::sql_query("SELECT pg_advisory_lock(7262201)").execute(&mut conn)?;
        let mut applied = Vec::new();
        let mut outcome = Ok(());
        for set in sets {
            match conn.run_pending_migrations(set) {
                Ok(versions) => applied.extend(versions.iter().map(ToString::to_string)),
                Err(error) => {
                    outcome = Err(MigrationError::Migration(error.to_string()));
                    break;
                }
            }
        }
        diesel::sql_query("SELECT pg_advisory_unlock(7262201)").execute(&mut conn)?;
        outcome.map(|()| applied)
    })
    .await
    .map_err(|_| MigrationError::Panicked)?
}

/// What [`truncate_without_waiting`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truncation {
    Truncated,
    /// Asked again under the lock, the caller no longer wanted it.
    NotWanted,
    /// Someone held the table: nothing was done, and nobody waited.
    Held,
}

/// Truncates `table` (a trusted name) if nobody holds it and `still_wanted`, asked again under
/// the lock, says so. The lock is taken with `NOWAIT`: a truncate queued behind a long reader
/// (a `pg_dump`) would make every later reader and writer of the table wait behind it, so
/// when anyone holds the table this gives up at once.
pub async fn truncate_without_waiting(
    conn: &mut AsyncPgConnection,
    table: &str,
    still_wanted: impl for<'c> FnOnce(&'c mut AsyncPgConnection) -> BoxFuture<'c, diesel::QueryResult<bool>> + Send,
) -> diesel::QueryResult<Truncation> {
    let outcome = conn
        .transaction::<Truncation, diesel::result::Error, _>(async |conn| {
            diesel_async::RunQueryDsl::execute(
                diesel::sql_query(format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE NOWAIT")),
                conn,
            )
            .await?;
            if !still_wanted(conn).await? {
                return Ok(Truncation::NotWanted);
            }
            diesel_async::RunQueryDsl::execute(diesel::sql_query(format!("TRUNCATE {table}")), conn).await?;
            Ok(Truncation::Truncated)
        })
        .await;
    match outcome {
        Err(error) if is_lock_not_available(&error) => Ok(Truncation::Held),
        other => other,
    }
}

/// Runs `turn` on a connection from `pool` every `every` until shutdown: upkeep that nothing
/// waits for (giving space back). A turn that fails, or finds no connection, is logged as
/// `what` and tried again at the next.
pub async fn every_until_shutdown<F>(
    pool: PgPool,
    every: std::time::Duration,
    what: &'static str,
    shutdown: tokio_util::sync::CancellationToken,
    mut turn: F,
) where
    F: for<'c> FnMut(&'c mut AsyncPgConnection) -> BoxFuture<'c, diesel::QueryResult<()>> + Send,
{
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match pool.get().await {
            Ok(mut conn) => {
                if let Err(error) = turn(&mut conn).await {
                    tracing::warn!(%error, "{what} failed; will try again");
                }
            }
            Err(error) => tracing::warn!(%error, "{what} skipped: no connection"),
        }
    }
}

/// `55P03 lock_not_available`: a lock taken with `NOWAIT` that someone holds.
pub fn is_lock_not_available(error: &diesel::result::Error) -> bool {
    matches!(error, diesel::result::Error::DatabaseError(_, info)
        if info.message().starts_with("could not obtain lock"))
}

/// Whether `error` says the database cannot do the work *now* but may a moment later: a lost
/// connection, a server shutting down or no longer the primary (a failover), a lock or
/// serialization conflict, a server out of connections or space. Callers retry these (a
/// consumer) or answer 503 with Retry-After (a service), never "something went wrong".
pub fn is_transient(error: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind as Kind, Error};
    match error {
        Error::DatabaseError(
            Kind::ClosedConnection | Kind::UnableToSendCommand | Kind::SerializationFailure | Kind::ReadOnlyTransaction,
            _,
        ) => true,
        Error::DatabaseError(_, info) => {
            let message = info.message().to_ascii_lowercase();
            TRANSIENT.iter().any(|opening| message.starts_with(opening))
        }
        // The transaction manager lost track after a failed rollback (a dropped connection):
        // the pool discards that connection and the next try has a fresh one.
        Error::BrokenTransactionManager => true,
        _ => false,
    }
}

/// Postgres message openings of errors that mean "busy, try again" (SQLSTATE classes 08,
/// 40, 53, 55P03, 57). diesel-async reports these as `DatabaseErrorKind::Unknown` without
/// their SQLSTATE, so the (English) message is all there is; a server speaking another
/// language makes them look permanent.
const TRANSIENT: &[&str] = &[
    "deadlock detected",
    "could not obtain lock",
    "canceling statement due to",
    "terminating connection",
    "the database system is",
    "sorry, too many clients",
    "remaining connection slots are reserved",
    "could not serialize access",
    "out of memory",
    "could not extend file",
    "no space left on device",
];

/// A database error carrying `message`, as the driver reports one from Postgres: for tests of
/// how callers classify errors ([`is_transient`] and those built on it).
pub fn planted_error(kind: diesel::result::DatabaseErrorKind, message: &'static str) -> diesel::result::Error {
    diesel::result::Error::DatabaseError(kind, Box::new(PlantedInfo(message)))
}

#[derive(Debug)]
struct PlantedInfo(&'static str);

impl diesel::result::DatabaseErrorInformation for PlantedInfo {
    fn message(&self) -> &str {
        self.0
    }
    fn details(&self) -> Option<&str> {
        None
    }
    fn hint(&self) -> Option<&str> {
        None
    }
    fn table_name(&self) -> Option<&str> {
        None
    }
    fn column_name(&self) -> Option<&str> {
        None
    }
    fn constraint_name(&self) -> Option<&str> {
        None
    }
    fn statement_position(&self) -> Option<i32> {
        None
    }
}

/// The database name of a URL, for log lines and messages (never the password).
pub fn database_name(url: &str) -> &str {
    url.rsplit('/').next().and_then(|tail| tail.split('?').next()).unwrap_or(url)
}

/// Pushes bound parameters, separated by commas, into a statement being built by hand (a
/// diesel `QueryFragment::walk_ast`); returns early with the error of one that cannot be
/// bound. `push_binds!(out, Uuid => &self.id, Text => &self.name)` writes `$1, $2`.
#[macro_export]
macro_rules! push_binds {
    ($out:expr, $first_type:ty => $first:expr $(, $type:ty => $value:expr)* $(,)?) => {{
        $out.push_bind_param::<$first_type, _>($first)?;
        $(
            $out.push_sql(", ");
            $out.push_bind_param::<$type, _>($value)?;
        )*
    }};
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_database_name_is_the_last_path_segment_without_options() {
        assert_eq!(super::database_name("postgres://u:secret@h:5432/orders?sslmode=disable"), "orders");
        assert_eq!(super::database_name("postgres://h/inventory"), "inventory");
    }
}
