//! Lanes: several relay instances publish one outbox at once, each its own share of it.
//!
//! Every outbox row carries a bucket, a hash of its message key (the order id) that Postgres
//! computes when the row is written (`lane_bucket`, 0..1024). With `N` lanes a row belongs
//! to lane `lane_bucket % N`, so all the rows of one order are in one lane, and a lane is
//! published by one instance at a time: per-order order holds as it did with one leader.
//!
//! Everything lives in Postgres advisory locks held by the relay's main session (decision
//! 0001, now per lane), so a dead session gives up its lanes at once:
//!
//! - **Membership:** each instance holds the old leader lock *shared*. The number of holders
//!   is the number of live instances, and a relay from before lanes, which takes that lock
//!   exclusively, can neither lead while lane relays run nor be joined while it leads.
//! - **Lane count:** each instance holds a shared lock named after its `N`; an instance
//!   configured with another `N` would cut the outbox differently (an order's rows in two
//!   lanes), so it does not take lanes while one with a different count is a member.
//! - **Lanes:** an exclusive lock per lane. An instance aims at `ceil(N / members)` lanes:
//!   it takes free lanes while it has fewer, and gives back its surplus (after its batches
//!   in flight are settled) when more members arrive.

use diesel::QueryResult;
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Bool, Integer};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// How many buckets rows are hashed into; lanes are buckets modulo the lane count.
pub const BUCKETS: i32 = 1024;

/// Held shared by every lane relay of an outbox; before lanes, the active relay's exclusive
/// leader lock ("outbox").
const MEMBER_LOCK: i64 = 0x6f75_7462_6f78;
/// Two-key advisory locks: (class, lane) for the lanes, (class, N) for the lane count.
const LANE_CLASS: i32 = 0x6c61_6e65; // "lane"
const LANE_COUNT_CLASS: i32 = 0x6c6e_636e; // "lncn"

/// What an instance may not do yet, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A relay from before lanes holds the outbox alone.
    SoleLeader,
    /// A member cuts the outbox into this many lanes.
    OtherLaneCount(i32),
}

/// This instance's lanes of one outbox.
#[derive(Debug)]
pub struct Lanes {
    count: i32,
    /// Ascending.
    held: Vec<i32>,
}

impl Lanes {
    /// Joins the outbox's relays with `count` lanes, on `conn`'s session. Nothing is taken
    /// yet: see [`Lanes::rebalance`].
    pub async fn join(conn: &mut AsyncPgConnection, count: i32) -> QueryResult<Result<Self, Refusal>> {
        let count = count.clamp(1, BUCKETS);
        let member: OkRow = diesel::sql_query("SELECT pg_try_advisory_lock_shared($1) AS ok")
            .bind::<BigInt, _>(MEMBER_LOCK)
            .get_result(conn)
            .await?;
        if !member.ok {
            return Ok(Err(Refusal::SoleLeader));
        }
        // Never refused (nobody takes it exclusively), but never waited for either.
        diesel::sql_query("SELECT pg_try_advisory_lock_shared($1, $2)")
            .bind::<Integer, _>(LANE_COUNT_CLASS)
            .bind::<Integer, _>(count)
            .execute(conn)
            .await?;
        let lanes = Self { count, held: Vec::new() };
        if let Some(other) = lanes.other_lane_count(conn).await? {
            lanes.leave(conn).await?;
            return Ok(Err(Refusal::OtherLaneCount(other)));
        }
        Ok(Ok(lanes))
    }

    /// Gives back every lock this instance holds on the session.
    async fn leave(&self, conn: &mut AsyncPgConnection) -> QueryResult<()> {
        diesel::sql_query("SELECT pg_advisory_unlock_all()").execute(conn).await.map(drop)
    }

    pub fn count(&self) -> i32 {
        self.count
    }

    /// The lanes this instance publishes, in order.
    pub fn held(&self) -> &[i32] {
        &self.held
    }

    /// How many lanes this instance should hold, given the live instances now: `ceil(N /
    /// members)`.
    pub async fn fair_share(&self, conn: &mut AsyncPgConnection) -> QueryResult<usize> {
        let members = self.members(conn).await?.max(1) as usize;
        Ok((self.count as usize).div_ceil(members))
    }

    /// Moves toward `share` lanes (see [`Lanes::fair_share`]): releases lanes above it (only
    /// when `idle`, i.e. nothing of them is in flight), then tries free lanes up to it.
    /// Returns whether the held lanes changed.
    pub async fn rebalance(&mut self, conn: &mut AsyncPgConnection, share: usize, idle: bool) -> QueryResult<bool> {
        let before = self.held.clone();
        while idle && self.held.len() > share {
            let Some(lane) = self.held.pop() else { break };
            diesel::sql_query("SELECT pg_advisory_unlock($1, $2)")
                .bind::<Integer, _>(LANE_CLASS)
                .bind::<Integer, _>(lane)
                .execute(conn)
                .await?;
        }
        // Another count may have joined in a race with this one; then neither takes more.
        if self.held.len() < share && self.other_lane_count(conn).await?.is_none() {
            for lane in 0..self.count {
                if self.held.len() >= share {
                    break;
                }
                if !self.held.contains(&lane) && self.try_lane(conn, lane).await? {
                    self.held.push(lane);
                }
            }
            self.held.sort_unstable();
        }
        Ok(self.held != before)
    }

    async fn try_lane(&self, conn: &mut AsyncPgConnection, lane: i32) -> QueryResult<bool> {
        let row: OkRow = diesel::sql_query("SELECT pg_try_advisory_lock($1, $2) AS ok")
            .bind::<Integer, _>(LANE_CLASS)
            .bind::<Integer, _>(lane)
            .get_result(conn)
            .await?;
        Ok(row.ok)
    }

    /// Live instances: sessions holding the member lock shared (this one included).
    async fn members(&self, conn: &mut AsyncPgConnection) -> QueryResult<i64> {
        #[derive(QueryableByName)]
        struct Members {
            #[diesel(sql_type = BigInt)]
            members: i64,
        }
        let row: Members = diesel::sql_query(
            "SELECT count(*) AS members FROM pg_locks
              WHERE locktype = 'advisory' AND granted AND mode = 'ShareLock' AND objsubid = 1
                AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                AND classid = ($1 >> 32)::oid AND objid = ($1 & 4294967295)::oid",
        )
        .bind::<BigInt, _>(MEMBER_LOCK)
        .get_result(conn)
        .await?;
        Ok(row.members)
    }

    /// A lane count other than this one's that a member holds, if any.
    async fn other_lane_count(&self, conn: &mut AsyncPgConnection) -> QueryResult<Option<i32>> {
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = Integer)]
            count: i32,
        }
        let rows: Vec<Count> = diesel::sql_query(
            "SELECT objid::bigint::int AS count FROM pg_locks
              WHERE locktype = 'advisory' AND granted AND objsubid = 2
                AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                AND classid = $1::bigint::oid AND objid <> $2::bigint::oid
              LIMIT 1",
        )
        .bind::<Integer, _>(LANE_COUNT_CLASS)
        .bind::<Integer, _>(self.count)
        .load(conn)
        .await?;
        Ok(rows.into_iter().next().map(|row| row.count))
    }
}

#[derive(QueryableByName)]
struct OkRow {
    #[diesel(sql_type = Bool)]
    ok: bool,
}
