//! What waits in an outbox, measured from the table itself for `/health` and the gauges.

use diesel::QueryResult;
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Double};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

#[derive(Debug, Clone, Copy, QueryableByName)]
pub struct Backlog {
    #[diesel(sql_type = BigInt)]
    pub rows: i64,
    /// Seconds since the oldest waiting row was written; 0 when the outbox is empty.
    #[diesel(sql_type = Double)]
    pub oldest_age: f64,
}

pub async fn measure(conn: &mut AsyncPgConnection) -> QueryResult<Backlog> {
    diesel::sql_query(
        "SELECT count(*) AS rows, COALESCE(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest_age FROM outbox",
    )
    .get_result(conn)
    .await
}
