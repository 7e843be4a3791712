//! The relay's two ends, as [`crate::pipeline`] uses them: the outbox table on the relay's
//! database session ([`Store`]) and the idempotent producer ([`Sink`]). Ids of one order
//! follow commit order (see `messaging::outbox`), so reading in id order never reorders an
//! order's events.

use chrono::{DateTime, Utc};
use diesel::dsl;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::QueryFragment;
use diesel::sql_types::{Array, BigInt, Integer, Text};
use diesel_async::methods::LoadQuery;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures::FutureExt as _;
use futures::future::BoxFuture;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use schema::tables::messaging::outbox;
use uuid::Uuid;

use crate::metrics::{OutboxMetrics, Stage};
use crate::pipeline::{Sink, Store};

/// An outbox row as the relay publishes it. The envelope is read as the text Postgres prints
/// for the `jsonb` column and sent as it is: parsing it into a JSON value and printing that
/// again, only to send the same document, was most of the relay's CPU (`scripts/profile
/// drain`). Consumers parse the envelope; its spacing and key order carry nothing.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = outbox, check_for_backend(diesel::pg::Pg))]
pub struct Outgoing {
    pub id: i64,
    pub event_id: Uuid,
    pub topic: String,
    pub message_key: String,
    pub event_type: String,
    pub correlation_id: String,
    pub traceparent: Option<String>,
    #[diesel(select_expression = outbox::envelope.cast::<Text>(), select_expression_type = dsl::Cast<outbox::envelope, Text>)]
    pub payload: String,
    pub created_at: DateTime<Utc>,
}

define_sql_function! {
    /// The elements of an array, one row each.
    fn unnest(ids: Array<BigInt>) -> BigInt;
}

define_sql_function! {
    /// Postgres's `mod(a, b)`, the remainder of `a / b`.
    #[sql_name = "mod"]
    fn remainder(a: Integer, b: Integer) -> Integer;
}

// The reads are written with Diesel's expressions only, no SQL text, so that Diesel keeps
// them as prepared statements on the session: one round trip per read, and no planning after
// the first few. (A statement with `diesel::dsl::sql` in it is parsed and planned on every
// call, and an array of 1,500 ids in flight made planning cost as much as reading.) Postgres
// then plans the read once for any parameters, a generic plan, so the rows in flight are
// left out with `NOT (id = ANY(SELECT unnest($1)))`: a hashed subplan, built once per read.
// Both `id <> ALL($1)` and `id <> ALL(SELECT ...)` compare every scanned row with every id in
// flight under a generic plan: reading 2,000 rows past 6,000 in flight took 110 ms and 986 ms,
// against 2 ms hashed (decision 0023). Ids are never NULL, so the negation means what it says.

/// The oldest `limit` rows not in `excluding`, of the given lanes (`(count, lanes)`) or of all.
fn read<'a>(
    excluding: &'a [i64],
    limit: i64,
    lanes: Option<(i32, &'a [i32])>,
) -> impl LoadQuery<'a, AsyncPgConnection, Outgoing> + QueryFragment<Pg> + Send + 'a {
    let mut query = outbox::table
        .filter(dsl::not(outbox::id.eq_any(diesel::select(unnest(excluding)))))
        .order(outbox::id.asc())
        .limit(limit)
        .select(Outgoing::as_select())
        .into_boxed();
    if let Some((count, lanes)) = lanes {
        query = query.filter(remainder(outbox::lane_bucket, count).eq_any(lanes));
    }
    query
}

impl Store for AsyncPgConnection {
    type Error = diesel::result::Error;

    async fn fetch(&mut self, excluding: &[i64], limit: i64) -> QueryResult<Vec<Outgoing>> {
        read(excluding, limit, None).load(self).await
    }

    async fn delete(&mut self, ids: &[i64]) -> QueryResult<usize> {
        if ids.is_empty() {
            return Ok(0);
        }
        diesel::delete(outbox::table.filter(outbox::id.eq_any(ids))).execute(self).await
    }
}

/// Some lanes of the outbox (`crate::lanes`), on the relay's session.
pub struct LaneOutbox<'c> {
    pub conn: &'c mut AsyncPgConnection,
    /// How many lanes the outbox is cut into.
    pub count: i32,
    /// The lanes read from.
    pub lanes: &'c [i32],
    /// Where each read's time is recorded.
    pub metrics: &'c OutboxMetrics,
}

impl Store for LaneOutbox<'_> {
    type Error = diesel::result::Error;

    async fn fetch(&mut self, excluding: &[i64], limit: i64) -> QueryResult<Vec<Outgoing>> {
        let lanes = (self.lanes.len() < self.count as usize).then_some((self.count, self.lanes));
        let started = std::time::Instant::now();
        let rows = read(excluding, limit, lanes).load(self.conn).await;
        self.metrics.stage(Stage::read, started.elapsed());
        rows
    }

    async fn delete(&mut self, ids: &[i64]) -> QueryResult<usize> {
        self.conn.delete(ids).await
    }
}

impl Sink for FutureProducer {
    /// Hands the row to the producer's queue at once; the future is its acknowledgement.
    fn send(&self, row: &Outgoing) -> BoxFuture<'static, Result<(), KafkaError>> {
        let record = FutureRecord::to(&row.topic).key(&row.message_key).payload(&row.payload).headers(headers(row));
        match self.send_result(record) {
            Ok(delivery) => async move {
                match delivery.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((error, _))) => Err(error),
                    Err(_) => Err(KafkaError::Canceled),
                }
            }
            .boxed(),
            Err((error, _)) => futures::future::ready(Err(error)).boxed(),
        }
    }
}

/// `event_id`, `event_type`, `correlation_id` and `traceparent` travel as headers too, so a
/// message can be routed and traced without parsing its body.
fn headers(row: &Outgoing) -> OwnedHeaders {
    let event_id = row.event_id.to_string();
    let mut headers = OwnedHeaders::new()
        .insert(Header { key: "event_id", value: Some(event_id.as_str()) })
        .insert(Header { key: "event_type", value: Some(row.event_type.as_str()) })
        .insert(Header { key: "correlation_id", value: Some(row.correlation_id.as_str()) });
    if let Some(traceparent) = &row.traceparent {
        headers = headers.insert(Header { key: "traceparent", value: Some(traceparent.as_str()) });
    }
    headers
}

#[cfg(test)]
mod tests {
    use diesel::pg::Pg;
    use diesel::query_builder::QueryFragment;

    use super::read;

    /// Diesel parses and plans a statement with SQL text in it on every call; the relay's
    /// reads stay prepared statements, and leave the rows in flight out with a hashed set.
    fn assert_prepared_and_hashed(query: impl QueryFragment<Pg>) {
        assert!(query.is_safe_to_cache_prepared(&Pg).unwrap(), "the read would be planned on every call");
        let sql = diesel::debug_query::<Pg, _>(&query).to_string();
        assert!(sql.contains(r#"NOT (("outbox"."id" = ANY(SELECT unnest($1))))"#), "{sql}");
    }

    #[test]
    fn the_reads_stay_prepared_statements_and_hash_the_rows_in_flight() {
        assert_prepared_and_hashed(read(&[1, 2, 3], 500, None));
        assert_prepared_and_hashed(read(&[1, 2, 3], 500, Some((8, &[0, 1]))));
    }
}
