//! When a relay needs a notification to wake up: only while it sleeps (decision 0020, "a cost
//! of the wake-up"; messaging migration 000015 holds the protocol). Every `NOTIFY` serializes
//! its writer's commit with every other notifying commit of the cluster, through the WAL
//! flush; so writers stay silent while the relay of their row's lane is awake, and an awake
//! relay reads again after every acknowledgement instead of waiting to be told. With nothing
//! in flight it lingers awake (`linger_ms`, reading every [`LINGERING_READS`]) before it
//! sleeps, so that under steady traffic it does not sleep at all.
//!
//! Before it sleeps, the relay takes its lanes' wake locks ([`fall_asleep`]); from then on a
//! writer of those lanes notifies. A writer that stayed silent holds its lane's lock shared
//! until its commit is visible, so once the relay holds them all, one more read sees every
//! silent writer's row: only if that read is empty does the relay sleep, and it lets the
//! locks go when it wakes ([`wake_up`]).

use std::time::Duration;

use diesel::QueryResult;
use diesel::QueryableByName;
use diesel::sql_types::{Array, Bool, SmallInt};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// How often a relay that lingers awake with nothing to read reads again (`linger_ms`). A
/// read costs the database about a millisecond even when it finds nothing: two relays
/// reading every millisecond took enough of a two-core machine to lower the rate it sustains.
pub const LINGERING_READS: Duration = Duration::from_millis(2);

/// The first wait after a relay found a writer of its lanes between its insert and its
/// commit; doubled while that goes on, up to [`MOST_BETWEEN_TRIES`]. A commit takes about a
/// WAL flush, so most writers are done at the first look.
pub const FIRST_TRY_AGAIN: Duration = Duration::from_millis(1);

/// The longest a relay that cannot fall asleep waits between two reads (a writer that keeps
/// its transaction open after inserting, say).
pub const MOST_BETWEEN_TRIES: Duration = Duration::from_millis(32);

#[derive(QueryableByName)]
struct Asleep {
    #[diesel(sql_type = Bool)]
    asleep: bool,
}

/// Takes the wake locks of all of `lanes`, or of none: false when a writer of one of them is
/// between its insert and its commit (or another session holds the lane's lock).
pub async fn fall_asleep(conn: &mut AsyncPgConnection, lanes: &[i16]) -> QueryResult<bool> {
    let row: Asleep = diesel::sql_query("SELECT outbox_relay_sleep($1) AS asleep")
        .bind::<Array<SmallInt>, _>(lanes)
        .get_result(conn)
        .await?;
    Ok(row.asleep)
}

/// Lets the wake locks of `lanes` go (taken by [`fall_asleep`]): their writers are silent
/// again.
pub async fn wake_up(conn: &mut AsyncPgConnection, lanes: &[i16]) -> QueryResult<()> {
    diesel::sql_query("SELECT outbox_relay_wake($1)").bind::<Array<SmallInt>, _>(lanes).execute(conn).await?;
    Ok(())
}
