//! Writing to the outbox log. Call [`enqueue`] inside the transaction that changes the state
//! the event describes; the relay publishes the row once that transaction has committed.
//!
//! Per-order ordering relies on one rule: a transaction that writes an event for an order
//! must first lock that order's row (or be the transaction that creates it). The outbox id
//! is then drawn after the previous event of the same order committed, so ids of one order
//! increase in commit order, and the relay, which publishes transactions in the order their
//! commits became visible and the rows of one window in id order, never reorders them
//! (`relay/src/window.rs`).

use std::io::Write as _;

use crate::tables::outbox_log;
use diesel::expression::AsExpression;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::AstPass;
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sql_types;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use schema::envelope::Trace;
use schema::{Envelope, Event};
use uuid::Uuid;

/// An event on its way into the outbox: the row [`enqueue`] writes, or that a caller's own
/// statement writes with [`NewEvent::push_insert_for_each`].
#[derive(Insertable)]
#[diesel(table_name = outbox_log)]
pub struct NewEvent<'a> {
    event_id: Uuid,
    topic: &'a str,
    message_key: String,
    event_type: &'a str,
    correlation_id: &'a str,
    traceparent: Option<&'a str>,
    envelope: JsonText,
}

/// A JSON document already printed, bound to a `json` column as it is. The outbox keeps the
/// envelope as its writer printed it (messaging migration 000016): Postgres checks that it is
/// JSON and stores the text, and the relay sends that text without parsing it.
#[derive(Debug, AsExpression)]
#[diesel(sql_type = sql_types::Json)]
pub struct JsonText(String);

impl ToSql<sql_types::Json, Pg> for JsonText {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        // A `json` value's binary form is its text.
        out.write_all(self.0.as_bytes())?;
        Ok(IsNull::No)
    }
}

impl<'a> NewEvent<'a> {
    /// `envelope`, to be published on `topic` with the order id as key.
    pub fn new<E: Event>(topic: &'a str, envelope: &'a Envelope<E>) -> QueryResult<Self> {
        let json =
            serde_json::to_string(envelope).map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))?;
        Ok(Self {
            event_id: envelope.event_id.0,
            topic,
            message_key: envelope.aggregate_id.to_string(),
            event_type: E::TYPE,
            correlation_id: &envelope.correlation_id,
            traceparent: envelope.traceparent.as_deref(),
            envelope: JsonText(json),
        })
    }

    /// Writes `INSERT INTO outbox_log (…) SELECT <this event> FROM <source>` into a statement
    /// being built: the event is written once per row of `source`, a table or a `WITH` query
    /// of that statement. With a source of one row or none, the event is written exactly
    /// when what it announces was, in the same statement.
    pub fn push_insert_for_each<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>, source: &str) -> QueryResult<()> {
        out.push_sql(
            "INSERT INTO outbox_log (event_id, topic, message_key, event_type, correlation_id, traceparent, envelope) \
             SELECT ",
        );
        platform::push_binds!(out,
            sql_types::Uuid => &self.event_id,
            sql_types::Text => &self.topic,
            sql_types::Text => &self.message_key,
            sql_types::Text => &self.event_type,
            sql_types::Text => &self.correlation_id,
            sql_types::Nullable<sql_types::Text> => &self.traceparent,
            sql_types::Json => &self.envelope,
        );
        out.push_sql(" FROM ");
        out.push_sql(source);
        Ok(())
    }
}

/// Where the events a transaction writes go and the trace they continue: what a handler hands
/// the functions that write its answers, instead of a topic and a trace to each of them.
#[derive(Debug, Clone, Copy)]
pub struct Outbox<'a> {
    pub topic: &'a str,
    pub trace: &'a Trace,
}

impl<'a> Outbox<'a> {
    pub fn new(topic: &'a str, trace: &'a Trace) -> Self {
        Self { topic, trace }
    }

    /// `event` in an envelope that continues the trace.
    pub fn envelope<E: Event>(&self, event: E) -> Envelope<E> {
        Envelope::new(event, self.trace)
    }

    /// Adds `event` to the outbox (see [`enqueue`]).
    pub async fn write<E: Event>(&self, conn: &mut AsyncPgConnection, event: E) -> QueryResult<()> {
        enqueue(conn, self.topic, &self.envelope(event)).await
    }
}

/// Adds `envelope` to the outbox, to be published on `topic` with the order id as key.
pub async fn enqueue<E: Event>(conn: &mut AsyncPgConnection, topic: &str, envelope: &Envelope<E>) -> QueryResult<()> {
    diesel::insert_into(outbox_log::table).values(NewEvent::new(topic, envelope)?).execute(conn).await.map(drop)
}
