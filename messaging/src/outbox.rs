//! Writing to the outbox. Call [`enqueue`] inside the transaction that changes the state
//! the event describes; the row becomes visible to the relay when that transaction commits.
//!
//! Per-order ordering relies on one rule: a transaction that writes an event for an order
//! must first lock that order's row (or be the transaction that creates it). The outbox id
//! is then drawn after the previous event of the same order committed, so ids of one order
//! increase in commit order and the relay, which publishes in id order, never reorders them.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use schema::tables::messaging::outbox;
use schema::{Envelope, Event};
use uuid::Uuid;

/// An outbox row as the relay reads it.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = outbox, check_for_backend(diesel::pg::Pg))]
pub struct OutboxRow {
    pub id: i64,
    pub event_id: Uuid,
    pub topic: String,
    pub message_key: String,
    pub event_type: String,
    pub correlation_id: String,
    pub traceparent: Option<String>,
    pub envelope: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

#[derive(Insertable)]
#[diesel(table_name = outbox)]
struct NewRow<'a> {
    event_id: Uuid,
    topic: &'a str,
    message_key: String,
    event_type: &'a str,
    correlation_id: &'a str,
    traceparent: Option<&'a str>,
    envelope: serde_json::Value,
}

/// Adds `envelope` to the outbox, to be published on `topic` with the order id as key.
pub async fn enqueue<E: Event>(conn: &mut AsyncPgConnection, topic: &str, envelope: &Envelope<E>) -> QueryResult<()> {
    let json = serde_json::to_value(envelope).map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))?;
    diesel::insert_into(outbox::table)
        .values(NewRow {
            event_id: envelope.event_id.0,
            topic,
            message_key: envelope.aggregate_id.to_string(),
            event_type: E::TYPE,
            correlation_id: &envelope.correlation_id,
            traceparent: envelope.traceparent.as_deref(),
            envelope: json,
        })
        .execute(conn)
        .await
        .map(drop)
}
