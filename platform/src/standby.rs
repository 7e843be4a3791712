//! Waiting for the synchronous standbys to hold a commit (decision 0030): what the relay does
//! before it publishes a read's rows (rule 2), what the order service does before it
//! acknowledges a write (rule 1) and what a consumer does before it stores the offset of an
//! event it applied (rule 3). A failover takes back whatever the primary committed that the
//! promoted standby had not flushed; a reader that acts on such a commit (publishes it, moves
//! its Kafka offset past it) makes that loss visible to others, where it can no longer be
//! taken back.
//!
//! Which position to wait for depends on whose commits are covered:
//! - **the session's own commits** (rules 1 and 3, [`StandbyWait::until_committed_held`]): the
//!   primary's WAL *flush* position, read after the commit. A commit flushes its record
//!   locally before it waits for the standbys, so the record lies below that position even
//!   when the wait was cancelled or the manager had switched synchronous replication off;
//!   with `synchronous_commit = off` the session takes the insert position instead. Waiting for
//!   the insert position here would also wait for whatever other sessions have inserted and
//!   not yet flushed — under load, always something — and cost a look or two more per commit.
//! - **other sessions' commits, shown by a snapshot** (rule 2, the relay's reads): the WAL
//!   *insert* position, evaluated after the snapshot was taken; every commit the snapshot
//!   shows wrote its record below it, including one whose writer did not flush it
//!   (`synchronous_commit = off`), which the reader cannot know.
//!
//! Once `pg_stat_replication` shows enough standbys that are synchronous *now* with a flush
//! position at or past it, a standby promoted later has every one of those commits. A failover
//! manager that has switched synchronous replication off leaves the waiter waiting, not acting
//! on what only the primary has.

use std::time::{Duration, Instant};

use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl as _};

/// How many synchronous standbys must hold a commit, and how long to wait for them.
#[derive(Debug, Clone, Copy)]
pub struct StandbyWait {
    /// 0: act on what the primary committed (a database without standbys).
    pub standbys: u32,
    pub bound: Duration,
}

/// The standbys did not flush up to the position within the bound.
#[derive(Debug, thiserror::Error)]
#[error(
    "{have} of {want} synchronous standbys flushed the WAL up to {lsn} within {waited_ms} ms{}",
    if *unseen > 0 { "; the positions of some standbys are hidden from this role: grant it pg_read_all_stats" } else { "" }
)]
pub struct StandbysBehind {
    pub want: u32,
    pub have: i64,
    /// Standbys whose positions this role may not see.
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

#[derive(diesel::QueryableByName)]
struct Position {
    #[diesel(sql_type = Text)]
    lsn: String,
}

/// Synchronous standbys (`sync`, or `quorum` for `ANY n`) whose flush position is at or past
/// `$1`; and the standbys whose state `pg_stat_replication` hides from a role without
/// `pg_read_all_stats`.
const FLUSHED: &str = "SELECT count(*) FILTER (WHERE sync_state IN ('sync', 'quorum') AND flush_lsn >= $1::pg_lsn) AS standbys, \
            count(*) FILTER (WHERE sync_state IS NULL) AS unseen \
       FROM pg_stat_replication";

/// Past this session's last commit record: the local flush position, or the insert position
/// where this session's commits do not flush.
const COMMITTED: &str = "SELECT (CASE current_setting('synchronous_commit') WHEN 'off' \
            THEN pg_current_wal_insert_lsn() ELSE pg_current_wal_flush_lsn() END)::text AS lsn";

/// First pause between two looks; doubled up to [`MAX_PAUSE`]. A standby in the same zone
/// flushes within a millisecond or two.
const FIRST_PAUSE: Duration = Duration::from_micros(500);
const MAX_PAUSE: Duration = Duration::from_millis(20);

impl StandbyWait {
    /// No standbys to wait for.
    pub fn off() -> Self {
        Self { standbys: 0, bound: Duration::ZERO }
    }

    /// Whether there is anything to wait for.
    pub fn is_on(&self) -> bool {
        self.standbys > 0
    }

    /// Returns once `standbys` synchronous standbys have flushed the WAL up to `lsn` (the
    /// time it took), or fails after the bound.
    pub async fn until_flushed(&self, conn: &mut AsyncPgConnection, lsn: &str) -> Result<Duration, WaitError> {
        let began = Instant::now();
        let mut pause = FIRST_PAUSE;
        loop {
            let Flushed { standbys: have, unseen } =
                diesel::sql_query(FLUSHED).bind::<Text, _>(lsn).get_result::<Flushed>(conn).await?;
            if have >= i64::from(self.standbys) {
                return Ok(began.elapsed());
            }
            if began.elapsed() >= self.bound {
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

    /// Returns once the standbys hold every commit this session made so far, and every commit
    /// it has seen made by sessions that flush their commits (call it after a commit, outside a
    /// transaction); at once when the wait is off.
    pub async fn until_committed_held(&self, conn: &mut AsyncPgConnection) -> Result<Duration, WaitError> {
        if !self.is_on() {
            return Ok(Duration::ZERO);
        }
        let Position { lsn } = diesel::sql_query(COMMITTED).get_result::<Position>(conn).await?;
        self.until_flushed(conn, &lsn).await
    }
}
