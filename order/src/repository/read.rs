//! Reading orders: one or a customer's most recent, each with its lines and history, in one
//! statement ([`ReadOrders`]).

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use schema::OrderId;
use uuid::Uuid;

use super::status_of;
use crate::view::{HistoryEntry, LineView, OrderView};

/// One of `customer`'s orders with its lines and history; another customer's is `None`.
pub async fn find_for(conn: &mut AsyncPgConnection, id: OrderId, customer: &str) -> QueryResult<Option<OrderView>> {
    find_where(conn, id, Some(customer)).await
}

/// One order with its lines and history, whoever it belongs to (for the service itself).
pub async fn find(conn: &mut AsyncPgConnection, id: OrderId) -> QueryResult<Option<OrderView>> {
    find_where(conn, id, None).await
}

async fn find_where(
    conn: &mut AsyncPgConnection,
    id: OrderId,
    customer: Option<&str>,
) -> QueryResult<Option<OrderView>> {
    let found: Option<FoundOrder> = ReadOrders::One { id: id.0, customer }.get_result(conn).await.optional()?;
    found.map(FoundOrder::into_view).transpose()
}

/// `customer`'s most recent orders, newest first.
pub async fn recent(conn: &mut AsyncPgConnection, customer: &str, limit: i64) -> QueryResult<Vec<OrderView>> {
    let found: Vec<FoundOrder> = ReadOrders::RecentOf { customer, limit }.load(conn).await?;
    found.into_iter().map(FoundOrder::into_view).collect()
}

/// An order as [`ReadOrders`] returns it: its row, its lines as two arrays and its history as
/// three, each in order.
#[derive(Queryable)]
struct FoundOrder {
    id: Uuid,
    customer_id: String,
    status: String,
    rejection_reason: Option<String>,
    correlation_id: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    skus: Vec<String>,
    quantities: Vec<i32>,
    statuses: Vec<String>,
    reasons: Vec<Option<String>>,
    ats: Vec<DateTime<Utc>>,
}

impl FoundOrder {
    fn into_view(self) -> QueryResult<OrderView> {
        let history = self
            .statuses
            .iter()
            .zip(self.reasons)
            .zip(self.ats)
            .map(|((status, reason), at)| Ok(HistoryEntry { status: status_of(status)?, reason, at }))
            .collect::<QueryResult<_>>()?;
        let status = status_of(&self.status)?;
        Ok(OrderView {
            id: self.id,
            customer_id: self.customer_id,
            status,
            next: status.into(),
            rejection_reason: self.rejection_reason,
            correlation_id: self.correlation_id,
            lines: self
                .skus
                .into_iter()
                .zip(self.quantities)
                .map(|(sku, quantity)| LineView { sku, quantity })
                .collect(),
            history,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// Orders with their lines and history, one statement for all of them (decision 0021): a
/// request waiting for its order's outcome reads it again on every change, and so does every
/// `GET`. Lines and history come back as arrays, ordered by line number and by history id,
/// each looked up by the order's id.
enum ReadOrders<'a> {
    /// One order; only this customer's, if given.
    One { id: Uuid, customer: Option<&'a str> },
    /// A customer's most recent orders, newest first.
    RecentOf { customer: &'a str, limit: i64 },
}

impl QueryId for ReadOrders<'_> {
    type QueryId = ();
    // One text per kind of read: cached by the text.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for ReadOrders<'_> {
    type SqlType = (
        sql_types::Uuid,
        sql_types::Text,
        sql_types::Text,
        sql_types::Nullable<sql_types::Text>,
        sql_types::Text,
        sql_types::Timestamptz,
        sql_types::Timestamptz,
        sql_types::Array<sql_types::Text>,
        sql_types::Array<sql_types::Integer>,
        sql_types::Array<sql_types::Text>,
        sql_types::Array<sql_types::Nullable<sql_types::Text>>,
        sql_types::Array<sql_types::Timestamptz>,
    );
}

impl QueryFragment<Pg> for ReadOrders<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "SELECT o.id, o.customer_id, o.status, o.rejection_reason, o.correlation_id, o.created_at, o.updated_at, \
                ARRAY(SELECT l.sku FROM order_lines l WHERE l.order_id = o.id ORDER BY l.line_no), \
                ARRAY(SELECT l.quantity FROM order_lines l WHERE l.order_id = o.id ORDER BY l.line_no), \
                ARRAY(SELECT h.status FROM order_status_history h WHERE h.order_id = o.id ORDER BY h.id), \
                ARRAY(SELECT h.reason FROM order_status_history h WHERE h.order_id = o.id ORDER BY h.id), \
                ARRAY(SELECT h.at FROM order_status_history h WHERE h.order_id = o.id ORDER BY h.id) \
             FROM orders o WHERE ",
        );
        match self {
            Self::One { id, customer } => {
                out.push_sql("o.id = ");
                out.push_bind_param::<sql_types::Uuid, _>(id)?;
                if let Some(customer) = customer {
                    out.push_sql(" AND o.customer_id = ");
                    out.push_bind_param::<sql_types::Text, _>(customer)?;
                }
            }
            Self::RecentOf { customer, limit } => {
                out.push_sql("o.customer_id = ");
                out.push_bind_param::<sql_types::Text, _>(customer)?;
                out.push_sql(" ORDER BY o.created_at DESC, o.id DESC LIMIT ");
                out.push_bind_param::<sql_types::BigInt, _>(limit)?;
            }
        }
        Ok(())
    }
}
