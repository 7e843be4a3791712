//! Giving space back. The outbox log is a ring of partitions (`outbox_log_0` … `_7`, messaging
//! migration 000010): ids fall into them 16,384 at a time (a *generation*), and after eight
//! generations the first partition comes round again. A partition is truncated, all at once,
//! when every lane has published everything in it: every row in it has an id at or below
//! every lane's floor ([`crate::window::Position`]), so its transaction is one the lane's
//! position sees.
//!
//! A partition is looked at as soon as the relay's lanes pass into the next generation
//! (`crate::housekeeping`), so the log holds about one partition of published rows beside what
//! waits, and at every housekeeping turn besides.
//!
//! A truncate must never make anyone wait. It takes its lock with `NOWAIT`. If anyone holds
//! the partition (a `pg_dump`, a report, an insert still running into it, another relay's
//! read), it gives up at once and tries again a moment later. Writers and readers never
//! queue behind it. Inserts go to the sequence's current partition, which is never the one
//! truncated.

use diesel::QueryableByName;
use diesel::sql_types::BigInt;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures::future::BoxFuture;
use platform::db::Truncation;

/// Ids per generation: `1 << SLOT_BITS`; the migration's partition key is
/// `(id >> 14) & 7`.
pub const SLOT_BITS: u32 = 14;
/// Partitions in the ring.
pub const SLOTS: i64 = 8;

/// The partition an id falls into.
pub fn slot_of(id: i64) -> i64 {
    (id >> SLOT_BITS) & (SLOTS - 1)
}

/// The generation an id belongs to: the how-many-th time the sequence has filled a partition.
pub fn generation_of(id: i64) -> i64 {
    id.max(0) >> SLOT_BITS
}

/// The partitions that may be truncated: every one except the partition of the newest id
/// (`last_id`), whose rows all lie at or below `min_floor`, the lowest floor of any lane.
/// A partition holds the ids of its latest generation before the current one (and older ones,
/// if the lanes fell a whole ring behind): all of them are at or below that generation's last id.
pub fn reclaimable(last_id: i64, min_floor: i64) -> Vec<i64> {
    let current = generation_of(last_id);
    (1..SLOTS)
        .filter_map(|back| {
            let generation = current - back;
            let last_of_generation = ((generation + 1) << SLOT_BITS) - 1;
            (generation >= 0 && min_floor >= last_of_generation).then_some(generation & (SLOTS - 1))
        })
        .collect()
}

#[derive(QueryableByName)]
struct Bounds {
    #[diesel(sql_type = BigInt)]
    last_id: i64,
    #[diesel(sql_type = BigInt)]
    min_floor: i64,
}

#[derive(QueryableByName)]
struct Rows {
    #[diesel(sql_type = BigInt)]
    rows: i64,
}

/// Whether partition `slot` may be truncated now.
fn is_reclaimable(conn: &mut AsyncPgConnection, slot: i64) -> BoxFuture<'_, diesel::QueryResult<bool>> {
    Box::pin(async move {
        let now = bounds(conn).await?;
        Ok(reclaimable(now.last_id, now.min_floor).contains(&slot))
    })
}

/// What one turn of [`reclaim`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reclaimed {
    /// Partitions truncated.
    pub truncated: Vec<i64>,
    /// Partitions that could have been, but someone held them: tried again next turn.
    pub busy: Vec<i64>,
}

/// The newest id handed out (never ahead of it: `outbox_last_id()`, messaging migration
/// 000012) and the lowest floor of any lane.
pub(crate) const BOUNDS: &str =
    "SELECT outbox_last_id() AS last_id, (SELECT COALESCE(min(floor_id), 0) FROM outbox_lanes) AS min_floor";

async fn bounds(conn: &mut AsyncPgConnection) -> diesel::QueryResult<Bounds> {
    diesel::sql_query(BOUNDS).get_result(conn).await
}

/// Truncates the partitions of the outbox log that every lane has published past, on
/// `conn`'s session, without waiting for any lock.
pub async fn reclaim(conn: &mut AsyncPgConnection) -> diesel::QueryResult<Reclaimed> {
    let first = bounds(conn).await?;
    let mut done = Reclaimed::default();
    for slot in reclaimable(first.last_id, first.min_floor) {
        let table = format!("outbox_log_{slot}");
        let rows: Rows = diesel::sql_query(format!("SELECT count(*) AS rows FROM (SELECT 1 FROM {table} LIMIT 1) r"))
            .get_result(conn)
            .await?;
        if rows.rows == 0 {
            continue;
        }
        // Under the lock: no insert into it is running, and the sequence has not come round
        // to it since.
        match platform::db::truncate_without_waiting(conn, &table, move |conn| is_reclaimable(conn, slot)).await? {
            Truncation::Truncated => done.truncated.push(slot),
            Truncation::NotWanted => {}
            Truncation::Held => done.busy.push(slot),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: i64 = 1 << SLOT_BITS;

    #[test]
    fn a_partition_is_reclaimable_once_every_lane_is_past_its_last_generation() {
        // The sequence is in generation 10 (partition 2).
        let last_id = 10 * G + 5;
        assert_eq!(reclaimable(last_id, 0), Vec::<i64>::new(), "no lane has published anything");
        assert_eq!(reclaimable(last_id, 9 * G - 1), [0, 7, 6, 5, 4, 3], "generations 3 to 8: partitions 3 to 0");
        assert_eq!(reclaimable(last_id, 10 * G - 1), [1, 0, 7, 6, 5, 4, 3], "all but the current partition");
        assert_eq!(reclaimable(last_id, 10 * G + 3), [1, 0, 7, 6, 5, 4, 3], "never the current one");
        assert_eq!(reclaimable(2 * G, 2 * G), [1, 0], "generations that never existed are not counted");
    }

    #[test]
    fn ids_fall_into_the_partition_the_migration_routes_them_to() {
        assert_eq!(slot_of(0), 0);
        assert_eq!(slot_of(G - 1), 0);
        assert_eq!(slot_of(G), 1);
        assert_eq!(slot_of(8 * G + 1), 0);
    }
}
