//! Rule 2 of decision 0030: a row is published only once the synchronous standbys hold its
//! commit, so that a failover never takes back an event that is already on Kafka (a *ghost*).
//!
//! Each read notes the primary's WAL insert position, evaluated after the read's snapshot was
//! taken: every transaction that snapshot shows wrote its commit record below it (a commit is
//! inserted into the WAL before it becomes visible, even one that skipped waiting for the
//! standby or for the disk). Once `pg_stat_replication` shows enough synchronous standbys
//! whose flush position has passed it, every row of the read is on those standbys' disks,
//! and a standby promoted later has them all.
//!
//! The check asks for standbys that are synchronous *now*: a failover manager that switched
//! synchronous replication off (a standby down) leaves the relay holding its rows, not
//! publishing ones that only the primary has.

use std::time::{Duration, Instant};

use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl as _};

use crate::metrics::{OutboxMetrics, Stage};

/// How many synchronous standbys must hold a read's rows, and how long to wait for them.
#[derive(Debug, Clone, Copy)]
pub struct StandbyWait {
    /// 0: publish what the primary committed (no standbys).
    pub standbys: u32,
    pub bound: Duration,
}

/// The standbys did not flush a read's rows within the bound.
#[derive(Debug, thiserror::Error)]
#[error(
    "{have} of {want} synchronous standbys flushed the read's rows (WAL {lsn}) within {waited_ms} ms; publishing held{}",
    if *unseen > 0 { "; the positions of some standbys are hidden from this role: grant it pg_read_all_stats" } else { "" }
)]
pub struct StandbysBehind {
    pub want: u32,
    pub have: i64,
    /// Standbys whose positions the relay's role may not see.
    pub unseen: i64,
    pub lsn: String,
    pub waited_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error(transparent)]
    Behind(#[from] StandbysBehind),
    #[error("reading the standbys' positions: {0}")]
    Query(#[from] diesel::result::Error),
}

#[derive(diesel::QueryableByName)]
struct Flushed {
    #[diesel(sql_type = BigInt)]
    standbys: i64,
    #[diesel(sql_type = BigInt)]
    unseen: i64,
}

/// Synchronous standbys (`sync`, or `quorum` for `ANY n`) whose flush position is at or past
/// `$1`; and the standbys whose state `pg_stat_replication` hides from a role without
/// `pg_read_all_stats`.
const FLUSHED: &str = "SELECT count(*) FILTER (WHERE sync_state IN ('sync', 'quorum') AND flush_lsn >= $1::pg_lsn) AS standbys, \
            count(*) FILTER (WHERE sync_state IS NULL) AS unseen \
       FROM pg_stat_replication";

/// First pause between two looks; doubled up to [`MAX_PAUSE`]. A standby in the same zone
/// flushes within a millisecond or two.
const FIRST_PAUSE: Duration = Duration::from_micros(500);
const MAX_PAUSE: Duration = Duration::from_millis(20);

impl StandbyWait {
    /// Whether the relay waits at all.
    pub fn is_on(&self) -> bool {
        self.standbys > 0
    }

    /// Returns once `standbys` synchronous standbys have flushed the WAL up to `lsn`, or
    /// fails after the bound. The time spent is recorded as the `standby` stage.
    pub async fn until_flushed(
        &self,
        conn: &mut AsyncPgConnection,
        lsn: &str,
        metrics: &OutboxMetrics,
    ) -> Result<(), WaitError> {
        let began = Instant::now();
        let mut pause = FIRST_PAUSE;
        loop {
            let Flushed { standbys: have, unseen } =
                diesel::sql_query(FLUSHED).bind::<Text, _>(lsn).get_result::<Flushed>(conn).await?;
            if have >= i64::from(self.standbys) {
                metrics.stage(Stage::standby, began.elapsed());
                metrics.standby_waited(false);
                return Ok(());
            }
            if began.elapsed() >= self.bound {
                metrics.stage(Stage::standby, began.elapsed());
                metrics.standby_waited(true);
                return Err(StandbysBehind {
                    want: self.standbys,
                    have,
                    unseen,
                    lsn: lsn.to_owned(),
                    waited_ms: began.elapsed().as_millis() as u64,
                }
                .into());
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }
}
