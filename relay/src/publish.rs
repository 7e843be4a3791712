//! The relay's two ends, as [`crate::pipeline`] uses them: the outbox table on the relay's
//! database session ([`Store`]) and the idempotent producer ([`Sink`]). Ids of one order
//! follow commit order (see `messaging::outbox`), so reading in id order never reorders an
//! order's events.

use chrono::{DateTime, Utc};
use diesel::dsl::sql;
use diesel::expression::SqlLiteral;
use diesel::prelude::*;
use diesel::sql_types::{Array, Bool, Integer, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures::FutureExt as _;
use futures::future::BoxFuture;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use schema::tables::messaging::outbox;
use uuid::Uuid;

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
    #[diesel(select_expression = sql::<Text>("outbox.envelope::text"), select_expression_type = SqlLiteral<Text>)]
    pub payload: String,
    pub created_at: DateTime<Utc>,
}

impl Store for AsyncPgConnection {
    type Error = diesel::result::Error;

    async fn fetch(&mut self, excluding: &[i64], limit: i64) -> QueryResult<Vec<Outgoing>> {
        let query = outbox::table.order(outbox::id.asc()).limit(limit).select(Outgoing::as_select());
        if excluding.is_empty() {
            query.load(self).await
        } else {
            query.filter(outbox::id.ne_all(excluding)).load(self).await
        }
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
}

impl Store for LaneOutbox<'_> {
    type Error = diesel::result::Error;

    async fn fetch(&mut self, excluding: &[i64], limit: i64) -> QueryResult<Vec<Outgoing>> {
        if self.lanes.len() >= self.count as usize {
            return self.conn.fetch(excluding, limit).await;
        }
        let in_lanes = sql::<Bool>("lane_bucket % ")
            .bind::<Integer, _>(self.count)
            .sql(" = ANY(")
            .bind::<Array<Integer>, _>(self.lanes)
            .sql(")");
        outbox::table
            .filter(in_lanes)
            .filter(outbox::id.ne_all(excluding))
            .order(outbox::id.asc())
            .limit(limit)
            .select(Outgoing::as_select())
            .load(self.conn)
            .await
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
