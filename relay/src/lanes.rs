//! Lanes: several relay instances publish one outbox at once, each its own share of it.
//!
//! One room, over 300 lines: claiming, renewing, giving back and counting the members are
//! statements over the same tables (`outbox_lanes`, `outbox_relays`, the member locks), and
//! each is correct only together with the others.
//!
//! Every outbox row carries its lane (`lane`, a hash of the message key, the order id), so all
//! the rows of one order are in one lane. A lane is published by one instance at a time: the
//! owner named in its `outbox_lanes` row. Ownership is a lease with an epoch:
//!
//! - **Claim.** An instance takes a lane that is free (given back), whose lease has run out
//!   (its owner hangs or is paused), or whose owner is gone (the owner's member lock, below, is
//!   no longer held). Every claim raises the lane's epoch.
//! - **Renew.** The owner renews its leases while it lives, and writes its positions in the
//!   same statement, both only where the epoch is still the one it claimed. An owner that lost
//!   a lane (its lease ran out and another instance took it) learns so at its next renewal:
//!   the row no longer has its epoch. Until then it has read no new row, because it renews
//!   before reading whenever the lease may have run out ([`Lanes::must_renew`]). So a paused
//!   relay that wakes up cannot move a lane it lost, and reads nothing more of it.
//! - **Members.** Each instance holds a Postgres advisory lock under a key of its own on the
//!   session it reads with. A crashed instance's session closes and its lock goes at once,
//!   so its lanes are taken at the next look, not only when their leases run out.
//! - **Share.** Each instance aims at `ceil(lanes / members)` lanes and gives back its surplus,
//!   once nothing of it is in flight. A member counts only while it holds its lock *and* has
//!   said it is alive (`outbox_relays.seen_at`) within a lease: a paused instance keeps its
//!   session and its lock, and counting it would make the live ones give lanes back for it
//!   that nobody then takes until it wakes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use diesel::QueryResult;
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, SmallInt, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::window::{Position, Snapshot};

/// The advisory lock class of relay members (the second key is the member's own).
const MEMBER_CLASS: i32 = 0x6c6f_6773; // "logs"

/// The member locks of this database's relays, for the statements below.
const MEMBERS: &str = "SELECT objid::bigint AS member FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND classid = $1::bigint::oid
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";

/// The members that count toward the share: their lock is held and they said they are alive
/// within a lease (`$2`, in milliseconds). `$3` is this instance, which always counts.
const LIVE_MEMBERS: &str = "SELECT count(*) AS count FROM outbox_relays r
    WHERE r.member = $3
       OR (r.seen_at > now() - $2 * interval '1 millisecond' AND r.member IN (SELECT member FROM members))";

/// This instance's lanes of one outbox.
#[derive(Debug)]
pub struct Lanes {
    member: i32,
    /// Held lanes and the epoch each was claimed with.
    held: BTreeMap<i16, i64>,
    lease: Duration,
    renewed: Option<Instant>,
    /// When this instance last said it is alive (`outbox_relays`).
    seen: Instant,
    /// How many lanes the outbox has, counted when this session joined. The schema fixes
    /// them (the lane is a column generated from the message key, messaging migration 000010),
    /// so only a migration that rewrites the log could change them, and relays started before
    /// it would have to be restarted. Counting them at every rebalance read every version of
    /// every lane row: under a long transaction that keeps them all, 2.3 ms, five times a
    /// second locally (decision 0026, figure 10).
    total: usize,
}

/// A lane just claimed, and where its last publisher left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub lane: i16,
    pub position: Position,
}

#[derive(QueryableByName)]
struct ClaimedRow {
    #[diesel(sql_type = SmallInt)]
    lane: i16,
    #[diesel(sql_type = BigInt)]
    epoch: i64,
    #[diesel(sql_type = Text)]
    done: String,
    #[diesel(sql_type = BigInt)]
    floor_id: i64,
    #[diesel(sql_type = Nullable<Text>)]
    window_end: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    window_last: Option<i64>,
}

#[derive(QueryableByName)]
struct LaneRow {
    #[diesel(sql_type = SmallInt)]
    lane: i16,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

#[derive(QueryableByName)]
struct OkRow {
    #[diesel(sql_type = Bool)]
    ok: bool,
}

fn unreadable(error: crate::window::BadSnapshot) -> diesel::result::Error {
    diesel::result::Error::DeserializationError(Box::new(error))
}

impl ClaimedRow {
    fn position(&self) -> QueryResult<Position> {
        let window = match (&self.window_end, self.window_last) {
            (Some(end), Some(last)) => Some((Snapshot::parse(end).map_err(unreadable)?, last)),
            _ => None,
        };
        Ok(Position { done: Snapshot::parse(&self.done).map_err(unreadable)?, floor: self.floor_id, window })
    }
}

/// A position as the statements below take it: (done, floor, window end, window last).
fn columns(position: &Position) -> (String, i64, Option<String>, Option<i64>) {
    let (end, last) = match &position.window {
        Some((end, last)) => (Some(end.to_string()), Some(*last)),
        None => (None, None),
    };
    (position.done.to_string(), position.floor, end, last)
}

impl Lanes {
    /// Joins the outbox's relays on `conn`'s session, with leases of `lease`. Holds no lane
    /// yet: see [`Lanes::claim`].
    pub async fn join(conn: &mut AsyncPgConnection, lease: Duration) -> QueryResult<Self> {
        loop {
            let member = rand_member();
            let row: OkRow = diesel::sql_query("SELECT pg_try_advisory_lock($1, $2) AS ok")
                .bind::<Integer, _>(MEMBER_CLASS)
                .bind::<Integer, _>(member)
                .get_result(conn)
                .await?;
            if row.ok {
                // Rows of members that are gone are dropped here, so the table holds one row
                // per instance alive, however often relays restart.
                diesel::sql_query(format!("DELETE FROM outbox_relays WHERE member NOT IN ({MEMBERS})"))
                    .bind::<BigInt, _>(i64::from(MEMBER_CLASS))
                    .execute(conn)
                    .await?;
                let total: Count =
                    diesel::sql_query("SELECT count(*) AS count FROM outbox_lanes").get_result(conn).await?;
                let mut lanes = Self {
                    member,
                    held: BTreeMap::new(),
                    lease,
                    renewed: None,
                    seen: Instant::now(),
                    total: total.count.max(0) as usize,
                };
                lanes.say_alive(conn).await?;
                return Ok(lanes);
            }
        }
    }

    /// Writes that this instance is alive, for the others' [`Lanes::fair_share`].
    async fn say_alive(&mut self, conn: &mut AsyncPgConnection) -> QueryResult<()> {
        let started = Instant::now();
        diesel::sql_query(
            "INSERT INTO outbox_relays (member) VALUES ($1) ON CONFLICT (member) DO UPDATE SET seen_at = now()",
        )
        .bind::<BigInt, _>(i64::from(self.member))
        .execute(conn)
        .await?;
        self.seen = started;
        Ok(())
    }

    /// The lanes this instance publishes, in order.
    pub fn held(&self) -> Vec<i16> {
        self.held.keys().copied().collect()
    }

    /// Whether the leases may have run out since they were last renewed: then the relay
    /// renews before it reads, so that it never reads a lane another instance took.
    pub fn must_renew(&self) -> bool {
        self.renewed.is_none_or(|at| at.elapsed() >= self.lease / 2)
    }

    /// Whether a renewal is due (a quarter of the lease since the last).
    pub fn renewal_due(&self) -> bool {
        self.renewed.is_none_or(|at| at.elapsed() >= self.lease / 4)
    }

    /// How many lanes this instance should hold given the live instances now:
    /// `ceil(lanes / members)`, counting only members that are running (see the module).
    pub async fn fair_share(&self, conn: &mut AsyncPgConnection) -> QueryResult<usize> {
        let members: Count = diesel::sql_query(format!("WITH members AS ({MEMBERS}) {LIVE_MEMBERS}"))
            .bind::<BigInt, _>(i64::from(MEMBER_CLASS))
            .bind::<BigInt, _>(self.lease.as_millis() as i64)
            .bind::<BigInt, _>(i64::from(self.member))
            .get_result(conn)
            .await?;
        Ok(self.total.div_ceil(members.count.max(1) as usize))
    }

    /// Claims every lane whose owner is gone or whose lease ran out, and free lanes up to
    /// `share`. Returns the lanes claimed, each with its position.
    pub async fn claim(&mut self, conn: &mut AsyncPgConnection, share: usize) -> QueryResult<Vec<Claimed>> {
        let want = share.saturating_sub(self.held.len()) as i64;
        let rows: Vec<ClaimedRow> = diesel::sql_query(format!(
            "WITH members AS ({MEMBERS}),
                  candidates AS (
                      SELECT lane, owner IS NOT NULL AS orphaned FROM outbox_lanes
                       WHERE owner IS NULL OR lease_until < now() OR owner NOT IN (SELECT member FROM members)),
                  chosen AS (
                      SELECT lane FROM candidates ORDER BY orphaned DESC, lane
                       LIMIT greatest((SELECT count(*) FROM candidates WHERE orphaned), $3))
             UPDATE outbox_lanes l
                SET owner = $2, epoch = l.epoch + 1, lease_until = now() + $4 * interval '1 millisecond'
               FROM chosen
              WHERE l.lane = chosen.lane
                AND (l.owner IS NULL OR l.lease_until < now() OR l.owner NOT IN (SELECT member FROM members))
          RETURNING l.lane, l.epoch, l.done::text AS done, l.floor_id, l.window_end::text AS window_end, l.window_last"
        ))
        .bind::<BigInt, _>(i64::from(MEMBER_CLASS))
        .bind::<BigInt, _>(i64::from(self.member))
        .bind::<BigInt, _>(want)
        .bind::<BigInt, _>(self.lease.as_millis() as i64)
        .load(conn)
        .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in rows {
            claimed.push(Claimed { lane: row.lane, position: row.position()? });
            self.held.insert(row.lane, row.epoch);
        }
        if !claimed.is_empty() && self.renewed.is_none() {
            self.renewed = Some(Instant::now());
        }
        Ok(claimed)
    }

    /// Renews the lease of every lane held and writes the positions that moved, where this
    /// instance still owns the lane. Returns the lanes it no longer owns: they are not held any
    /// more. Also says this instance is alive, a quarter of a lease after it last did.
    pub async fn renew(&mut self, conn: &mut AsyncPgConnection, moved: &[(i16, Position)]) -> QueryResult<Vec<i16>> {
        let started = Instant::now();
        if self.seen.elapsed() >= self.lease / 4 {
            self.say_alive(conn).await?;
        }
        let lanes = self.held();
        let kept = self.update(conn, &lanes, moved, Update::Renew).await?;
        let lost: Vec<i16> = lanes.into_iter().filter(|lane| !kept.contains(lane)).collect();
        for lane in &lost {
            self.held.remove(lane);
        }
        self.renewed = Some(started);
        Ok(lost)
    }

    /// Gives `lanes` back, writing the positions of those that moved, so that another
    /// instance takes them at once. Nothing of them may be in flight.
    pub async fn release(
        &mut self,
        conn: &mut AsyncPgConnection,
        lanes: &[i16],
        moved: &[(i16, Position)],
    ) -> QueryResult<()> {
        self.update(conn, lanes, moved, Update::Release).await?;
        for lane in lanes {
            self.held.remove(lane);
        }
        Ok(())
    }

    /// One statement for each of `lanes` that this instance holds: renews its lease or gives
    /// it back, and writes its position if it is in `moved`; only where the lane still has the
    /// epoch this instance claimed it with. Returns the lanes written.
    async fn update(
        &self,
        conn: &mut AsyncPgConnection,
        lanes: &[i16],
        moved: &[(i16, Position)],
        how: Update,
    ) -> QueryResult<Vec<i16>> {
        let mut ids = Vec::new();
        let mut epochs = Vec::new();
        let mut dones = Vec::new();
        let mut floors = Vec::new();
        let mut ends = Vec::new();
        let mut lasts = Vec::new();
        for lane in lanes {
            let Some(epoch) = self.held.get(lane) else { continue };
            let position = moved.iter().find(|(l, _)| l == lane).map(|(_, p)| columns(p));
            ids.push(*lane);
            epochs.push(*epoch);
            dones.push(position.as_ref().map(|p| p.0.clone()));
            floors.push(position.as_ref().map(|p| p.1));
            ends.push(position.as_ref().and_then(|p| p.2.clone()));
            lasts.push(position.as_ref().and_then(|p| p.3));
        }
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let (owner, lease_until) = match how {
            Update::Renew => ("l.owner", "now() + $8 * interval '1 millisecond'"),
            Update::Release => ("NULL", "'-infinity'::timestamptz"),
        };
        let rows: Vec<LaneRow> = diesel::sql_query(format!(
            "UPDATE outbox_lanes l
                SET owner = {owner}, lease_until = {lease_until},
                    done = COALESCE(v.done::pg_snapshot, l.done),
                    floor_id = COALESCE(v.floor_id, l.floor_id),
                    window_end = CASE WHEN v.done IS NULL THEN l.window_end ELSE v.window_end::pg_snapshot END,
                    window_last = CASE WHEN v.done IS NULL THEN l.window_last ELSE v.window_last END,
                    moved_at = CASE WHEN v.done IS NULL THEN l.moved_at ELSE now() END
               FROM unnest($1::smallint[], $2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::bigint[])
                    AS v (lane, epoch, done, floor_id, window_end, window_last)
              WHERE l.lane = v.lane AND l.epoch = v.epoch AND l.owner = $7
          RETURNING l.lane"
        ))
        .bind::<Array<SmallInt>, _>(ids)
        .bind::<Array<BigInt>, _>(epochs)
        .bind::<Array<Nullable<Text>>, _>(dones)
        .bind::<Array<Nullable<BigInt>>, _>(floors)
        .bind::<Array<Nullable<Text>>, _>(ends)
        .bind::<Array<Nullable<BigInt>>, _>(lasts)
        .bind::<BigInt, _>(i64::from(self.member))
        .bind::<BigInt, _>(self.lease.as_millis() as i64)
        .load(conn)
        .await?;
        Ok(rows.into_iter().map(|row| row.lane).collect())
    }
}

/// What [`Lanes::update`] does to the lease.
#[derive(Debug, Clone, Copy)]
enum Update {
    Renew,
    Release,
}

/// A member key: any positive 31-bit number, chosen at random (a clash is retried).
fn rand_member() -> i32 {
    ((uuid::Uuid::new_v4().as_u128() as u32) >> 1).max(1) as i32
}
