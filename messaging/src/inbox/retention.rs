//! Giving the inbox's space back. The inbox log is a ring of 16 partitions, one per day
//! (messaging migration 000010): an event's id is remembered in the partition of the day the
//! id was made (a UUID v7 starts with its time). A partition is truncated, all at once, when
//! everything in it was received longer ago than the retention, which must exceed the topics'
//! (kafka-init sets 168 h): an older event cannot be redelivered, so its inbox row has
//! nothing left to guard. No row is ever deleted one by one.
//!
//! The truncate takes its lock with `NOWAIT` (`platform::db::truncate_without_waiting`): if
//! anyone holds the partition (a `pg_dump`, say), it is tried again at the next turn, and
//! nobody waits behind it. The day's own partition is never old enough to be truncated. A
//! row whose id carries a time far from when it arrived (an id from a broken clock, or not a
//! UUID v7) keeps its partition from being truncated until that row is old too: nothing
//! received within the retention is ever forgotten.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Nullable, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures::future::BoxFuture;
use platform::db::{PgPool, Truncation};
use tokio_util::sync::CancellationToken;

use crate::settings::InboxSettings;

/// Partitions in the ring, one per day.
pub const SLOTS: usize = 16;

#[derive(QueryableByName)]
struct Newest {
    #[diesel(sql_type = Nullable<Timestamptz>)]
    received_at: Option<DateTime<Utc>>,
}

/// When the newest row of partition `table` arrived; `None` if it is empty.
async fn newest(conn: &mut AsyncPgConnection, table: &str) -> diesel::QueryResult<Option<DateTime<Utc>>> {
    let row: Newest =
        diesel::sql_query(format!("SELECT max(received_at) AS received_at FROM {table}")).get_result(conn).await?;
    Ok(row.received_at)
}

/// Whether every row of partition `table` arrived before `cutoff` (and it has any).
fn older_than(
    conn: &mut AsyncPgConnection,
    table: String,
    cutoff: DateTime<Utc>,
) -> BoxFuture<'_, diesel::QueryResult<bool>> {
    Box::pin(async move { Ok(newest(conn, &table).await?.is_some_and(|newest| newest < cutoff)) })
}

/// What one turn of [`retain`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Retained {
    /// Partitions truncated.
    pub truncated: Vec<usize>,
    /// Partitions old enough, but someone held them: tried again next turn.
    pub busy: Vec<usize>,
}

/// Truncates every partition of the inbox log whose rows were all received more than `keep`
/// before `now`.
pub async fn retain(conn: &mut AsyncPgConnection, keep: Duration, now: DateTime<Utc>) -> diesel::QueryResult<Retained> {
    let cutoff = now - chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
    let mut done = Retained::default();
    for slot in 0..SLOTS {
        let table = format!("inbox_log_{slot}");
        if newest(conn, &table).await?.is_none_or(|newest| newest >= cutoff) {
            continue;
        }
        let partition = table.clone();
        match platform::db::truncate_without_waiting(conn, &table, move |conn| older_than(conn, partition, cutoff))
            .await?
        {
            Truncation::Truncated => done.truncated.push(slot),
            Truncation::NotWanted => {}
            Truncation::Held => done.busy.push(slot),
        }
    }
    Ok(done)
}

/// Gives the inbox's space back as `settings` say (every `purge_every_secs`, keeping
/// `keep_hours`) until shutdown. A failed turn is tried again at the next: nothing depends on
/// it but the table's size.
pub fn retain_periodically(
    pool: PgPool,
    settings: &InboxSettings,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    let keep = Duration::from_secs(settings.keep_hours * 3600);
    let every = Duration::from_secs(settings.purge_every_secs);
    platform::db::every_until_shutdown(pool, every, "inbox retention", shutdown, move |conn| {
        Box::pin(async move {
            let retained = retain(conn, keep, Utc::now()).await?;
            for slot in &retained.truncated {
                tracing::info!(partition = slot, "a day of the inbox log, older than the retention, given back");
            }
            if !retained.busy.is_empty() {
                tracing::info!(partitions = ?retained.busy, "inbox partitions old enough are held by someone; will try again");
            }
            Ok(())
        })
    })
}
