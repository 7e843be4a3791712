//! Rule 2 of decision 0030: a row is published only once the synchronous standbys hold its
//! commit, so that a failover never takes back an event that is already on Kafka (a *ghost*).
//!
//! Each read notes the primary's WAL insert position, evaluated after the read's snapshot was
//! taken; its rows are handed to the producer once enough synchronous standbys have flushed
//! past it (`platform::standby` says why that covers every row the read shows). The time
//! spent is the `standby` stage of the relay's metrics; a wait past its bound counts as a
//! hold and shows in `/health` (`held_for_standby`).

use std::time::Instant;

use diesel_async::AsyncPgConnection;
pub use platform::standby::{StandbyWait, StandbysBehind, WaitError};

use crate::metrics::{OutboxMetrics, Stage};

/// Returns once `wait`'s standbys have flushed the WAL up to `lsn`, recording the wait.
pub async fn until_flushed(
    wait: &StandbyWait,
    conn: &mut AsyncPgConnection,
    lsn: &str,
    metrics: &OutboxMetrics,
) -> Result<(), WaitError> {
    let began = Instant::now();
    let result = wait.until_flushed(conn, lsn).await;
    metrics.stage(Stage::standby, began.elapsed());
    match result {
        Ok(_) => metrics.standby_waited(false),
        Err(WaitError::Behind(_)) => metrics.standby_waited(true),
        Err(WaitError::Query(_)) => {}
    }
    result.map(drop)
}
