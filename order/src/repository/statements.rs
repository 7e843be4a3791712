//! The statements the writes run, each one round trip (decision 0021): a new order with its
//! event ([`InsertOrder`]), and a status change with its history entry ([`Transition`]).

use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types;
use uuid::Uuid;

use crate::domain::OrderStatus;

/// A new order — its row, its lines, its first history entry and its `OrderPlaced` event — as
/// one statement (decision 0021). A single statement is its own transaction, so this is one
/// round trip to Postgres where `BEGIN`, four inserts and `COMMIT` were seven (the lines'
/// insert, whose text depends on how many lines there are, could not be prepared once and
/// took two). Its text is the same for every order, so each connection prepares it once.
///
/// If the idempotency key was used before, `placed` is empty and so is everything written
/// from it: nothing is written and no row is returned.
pub(super) struct InsertOrder<'a> {
    pub(super) id: Uuid,
    pub(super) customer_id: &'a str,
    pub(super) idempotency_key: &'a str,
    pub(super) request_hash: &'a str,
    pub(super) correlation_id: &'a str,
    pub(super) skus: Vec<&'a str>,
    pub(super) quantities: Vec<i32>,
    pub(super) event: messaging::outbox::NewEvent<'a>,
}

impl QueryId for InsertOrder<'_> {
    type QueryId = InsertOrder<'static>;
    // The text never changes (the lines travel as two arrays): the statement can be cached.
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for InsertOrder<'_> {
    /// When the order was created, and when its `PENDING` history entry was written.
    type SqlType = (sql_types::Timestamptz, sql_types::Timestamptz);
}

impl QueryFragment<Pg> for InsertOrder<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "WITH placed AS (\
                INSERT INTO orders (id, customer_id, idempotency_key, request_hash, status, correlation_id) \
                VALUES (",
        );
        platform::push_binds!(out,
            sql_types::Uuid => &self.id,
            sql_types::Text => &self.customer_id,
            sql_types::Text => &self.idempotency_key,
            sql_types::Text => &self.request_hash,
            sql_types::Text => OrderStatus::Pending.as_str(),
            sql_types::Text => &self.correlation_id,
        );
        out.push_sql(
            ") ON CONFLICT (customer_id, idempotency_key) DO NOTHING \
                RETURNING id, status, created_at), \
            lines AS (\
                INSERT INTO order_lines (order_id, line_no, sku, quantity) \
                SELECT placed.id, line.line_no::integer, line.sku, line.quantity \
                FROM placed, unnest(",
        );
        platform::push_binds!(out,
            sql_types::Array<sql_types::Text> => &self.skus,
            sql_types::Array<sql_types::Integer> => &self.quantities,
        );
        out.push_sql(
            ") WITH ORDINALITY AS line (sku, quantity, line_no)), \
            history AS (\
                INSERT INTO order_status_history (order_id, status) SELECT id, status FROM placed \
                RETURNING at), \
            event AS (",
        );
        self.event.push_insert_for_each(&mut out, "placed")?;
        out.push_sql(") SELECT placed.created_at, history.at FROM placed, history");
        Ok(())
    }
}

/// The statement [`transition`] runs: the status change and its history entry, one round
/// trip (decision 0021).
pub(super) struct Transition<'a> {
    pub(super) id: Uuid,
    pub(super) from: Vec<&'a str>,
    pub(super) to: &'a str,
    pub(super) rejection_reason: Option<&'a str>,
    pub(super) reason: Option<&'a str>,
}

impl QueryId for Transition<'_> {
    type QueryId = Transition<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for Transition<'_> {
    /// When the order was accepted.
    type SqlType = sql_types::Timestamptz;
}

impl QueryFragment<Pg> for Transition<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH moved AS (UPDATE orders SET status = ");
        out.push_bind_param::<sql_types::Text, _>(&self.to)?;
        out.push_sql(", updated_at = now(), rejection_reason = ");
        out.push_bind_param::<sql_types::Nullable<sql_types::Text>, _>(&self.rejection_reason)?;
        out.push_sql(" WHERE id = ");
        out.push_bind_param::<sql_types::Uuid, _>(&self.id)?;
        out.push_sql(" AND status = ANY(");
        out.push_bind_param::<sql_types::Array<sql_types::Text>, _>(&self.from)?;
        out.push_sql(
            ") RETURNING id, status, created_at), \
             history AS (INSERT INTO order_status_history (order_id, status, reason) SELECT id, status, ",
        );
        out.push_bind_param::<sql_types::Nullable<sql_types::Text>, _>(&self.reason)?;
        out.push_sql(" FROM moved) SELECT created_at FROM moved");
        Ok(())
    }
}
