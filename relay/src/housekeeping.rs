//! The relay's second session: every turn it measures the backlog (for `/health` and the
//! gauges) and gives the outbox log's published partitions back ([`crate::reclaim`]). It never
//! stands in the way of a read: it holds no lane, and its truncates never wait for a lock.

use std::sync::Arc;
use std::time::Duration;

use diesel_async::{AsyncConnection as _, AsyncPgConnection, SimpleAsyncConnection as _};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backlog;
use crate::metrics::OutboxMetrics;

/// A partition someone held is tried again this soon (or at the next turn, if sooner): the
/// space comes back shortly after the reader is gone. The truncate never waits, so trying
/// costs nobody anything.
const HELD_RETRY: Duration = Duration::from_millis(250);

/// On a session of its own until shutdown: every `every`, measures the backlog and gives the
/// log's finished partitions back; whenever `now` is notified (the relay's lanes passed into a
/// new generation of ids) and soon after a partition was held, gives partitions back only.
/// Failures are logged and tried again; nothing the relay publishes depends on them.
pub async fn housekeeping(
    name: String,
    url: String,
    every: Duration,
    metrics: OutboxMetrics,
    now: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut conn: Option<AsyncPgConnection> = None;
    let mut wait = every;
    // The backlog is measured at the regular turns only: a wake or a retry is about space.
    let mut measure_at = Instant::now();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
            () = now.notified() => {}
        }
        let session = match &mut conn {
            Some(session) => session,
            None => match AsyncPgConnection::establish(&url).await {
                // A truncate lost with the database brings back rows every position has
                // passed: nothing to wait for the disk for. Its lock is held until its commit,
                // and every read of the log waits for that.
                Ok(mut session) => match session.batch_execute("SET synchronous_commit = off").await {
                    Ok(()) => conn.insert(session),
                    Err(error) => {
                        tracing::debug!(outbox = %name, %error, "housekeeping cannot set up its session; will try again");
                        continue;
                    }
                },
                Err(error) => {
                    tracing::debug!(outbox = %name, %error, "housekeeping cannot connect; will try again");
                    continue;
                }
            },
        };
        let measure = Instant::now() >= measure_at;
        let turn = async {
            if measure {
                let backlog = backlog::measure(session).await?;
                metrics.set_backlog(backlog.rows, backlog.oldest_age);
            }
            crate::reclaim::reclaim(session).await
        };
        match turn.await {
            Ok(reclaimed) => {
                if measure {
                    measure_at = Instant::now() + every;
                }
                for slot in &reclaimed.truncated {
                    tracing::info!(outbox = %name, partition = slot, "published partition of the outbox log given back");
                }
                metrics.reclaimed(reclaimed.truncated.len(), reclaimed.busy.len());
                wait = if reclaimed.busy.is_empty() { every } else { every.min(HELD_RETRY) };
            }
            Err(error) => {
                tracing::warn!(outbox = %name, %error, "outbox housekeeping failed; will try again");
                conn = None;
            }
        }
    }
}
