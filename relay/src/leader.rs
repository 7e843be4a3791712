//! Leadership: one relay per outbox is active. It holds a session advisory lock on the
//! outbox's database; if its session dies, the lock goes with it and a standby takes it
//! within its retry interval.

use std::time::Duration;

use diesel::QueryResult;
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Bool};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use tokio_util::sync::CancellationToken;

/// The advisory lock that elects the active relay of one database's outbox.
const LEADER_LOCK: i64 = 0x6f75_7462_6f78; // "outbox"

/// Takes the lock on `conn`'s session, trying again every `retry`. Returns false if shutdown
/// came first.
pub async fn wait_for_leadership(
    conn: &mut AsyncPgConnection,
    outbox: &str,
    retry: Duration,
    shutdown: &CancellationToken,
) -> QueryResult<bool> {
    let mut logged = false;
    loop {
        if try_lock(conn).await? {
            return Ok(true);
        }
        if !logged {
            tracing::info!(outbox, "another relay is active; standing by");
            logged = true;
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(false),
            () = tokio::time::sleep(retry) => {}
        }
    }
}

async fn try_lock(conn: &mut AsyncPgConnection) -> QueryResult<bool> {
    #[derive(QueryableByName)]
    struct Locked {
        #[diesel(sql_type = Bool)]
        locked: bool,
    }
    let row: Locked = diesel::sql_query("SELECT pg_try_advisory_lock($1) AS locked")
        .bind::<BigInt, _>(LEADER_LOCK)
        .get_result(conn)
        .await?;
    Ok(row.locked)
}
