//! What waits in an outbox: the rows no lane's written position covers
//! (the `outbox_pending` view), for `/health` and the gauges.

use diesel::QueryResult;
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Double};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// Counted up to this many: a measurement every second must stay cheap however far behind
/// the relays are.
pub const COUNTED_AT_MOST: i64 = 100_000;

#[derive(Debug, Clone, Copy, QueryableByName)]
pub struct Backlog {
    /// Rows waiting (at most [`COUNTED_AT_MOST`]).
    #[diesel(sql_type = BigInt)]
    pub rows: i64,
    /// Seconds since the oldest waiting row counted was written; 0 when none waits.
    #[diesel(sql_type = Double)]
    pub oldest_age: f64,
}

/// The measurement, `$1` being [`COUNTED_AT_MOST`]. `outbox_pending` reads each lane from its
/// floor (messaging migration 000013), so it costs the rows waiting, not the rows the log holds.
pub const MEASURE: &str =
    "SELECT count(*) AS rows, COALESCE(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest_age
   FROM (SELECT created_at FROM outbox_pending LIMIT $1) waiting";

/// How many rows wait (at most [`COUNTED_AT_MOST`]) and how long the oldest has.
pub async fn measure(conn: &mut AsyncPgConnection) -> QueryResult<Backlog> {
    diesel::sql_query(MEASURE).bind::<BigInt, _>(COUNTED_AT_MOST).get_result(conn).await
}
