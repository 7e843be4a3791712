//! Every read and write of the order database. Each public function that changes state is
//! one transaction: state, history and outbox event commit together or not at all.
//!
//! One room, over 300 lines: every statement that touches `orders` and its history, so that
//! the row lock each write takes first (which orders an order's events) is seen in one place.

use crate::tables::orders;
use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types;
use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl};
use messaging::outbox::Outbox;
use schema::OrderId;
use schema::events::{OrderCancelled, OrderPlaced, OrderReadyToShip};
use uuid::Uuid;

use crate::domain::{OrderStatus, PlaceOrder, Step};
use crate::view::{HistoryEntry, LineView, OrderView};

/// What placing an order with an idempotency key did.
#[derive(Debug)]
pub enum Placement {
    /// A new order was written.
    Created(OrderView),
    /// The key was seen before with the same request: this is its order; nothing was written.
    Replayed(OrderView),
    /// The key was seen before with a different request.
    KeyReused { existing: OrderId },
}

/// Writes the order (as `id`), its lines, its first history entry and `OrderPlaced`, in one
/// statement, unless the idempotency key was used before.
#[tracing::instrument(name = "order.accept", skip_all, fields(order_id = %id), err)]
pub async fn place(
    conn: &mut AsyncPgConnection,
    id: OrderId,
    idempotency_key: &str,
    order: &PlaceOrder,
    out: Outbox<'_>,
) -> QueryResult<Placement> {
    // The event continues the trace from this span (`order.accept`, `order.cancel`, `order.ship`).
    let trace = &platform::trace::from_here(out.trace);
    let out = Outbox::new(out.topic, trace);
    let fingerprint = order.fingerprint();
    let placed = OrderPlaced { order_id: id, customer_id: order.customer_id.clone(), lines: order.lines.clone() };
    let envelope = out.envelope(placed);
    let insert = InsertOrder {
        id: id.0,
        customer_id: &order.customer_id,
        idempotency_key,
        request_hash: &fingerprint,
        correlation_id: &trace.correlation_id,
        skus: order.lines.iter().map(|line| line.sku.as_str()).collect(),
        quantities: order.lines.iter().map(|line| line.quantity.get()).collect(),
        event: messaging::outbox::NewEvent::new(out.topic, &envelope)?,
    };
    // Under concurrent retries this waits for the first attempt's transaction and then
    // inserts nothing.
    let created: Option<(DateTime<Utc>, DateTime<Utc>)> = insert.get_result(conn).await.optional()?;
    if let Some((created_at, pending_at)) = created {
        // What was just written, as a read would show it, without reading it back.
        return Ok(Placement::Created(OrderView {
            id: id.0,
            customer_id: order.customer_id.clone(),
            status: OrderStatus::Pending,
            next: OrderStatus::Pending.into(),
            rejection_reason: None,
            correlation_id: trace.correlation_id.clone(),
            lines: order
                .lines
                .iter()
                .map(|line| LineView { sku: line.sku.as_str().to_owned(), quantity: line.quantity.get() })
                .collect(),
            history: vec![HistoryEntry { status: OrderStatus::Pending, reason: None, at: pending_at }],
            created_at,
            updated_at: created_at,
        }));
    }
    let (existing, hash): (Uuid, String) = orders::table
        .filter(orders::customer_id.eq(&order.customer_id))
        .filter(orders::idempotency_key.eq(idempotency_key))
        .select((orders::id, orders::request_hash))
        .first(conn)
        .await?;
    if hash != fingerprint {
        return Ok(Placement::KeyReused { existing: OrderId(existing) });
    }
    let view = find(conn, OrderId(existing)).await?.ok_or(diesel::result::Error::NotFound)?;
    Ok(Placement::Replayed(view))
}

/// A new order — its row, its lines, its first history entry and its `OrderPlaced` event — as
/// one statement (decision 0021). A single statement is its own transaction, so this is one
/// round trip to Postgres where `BEGIN`, four inserts and `COMMIT` were seven (the lines'
/// insert, whose text depends on how many lines there are, could not be prepared once and
/// took two). Its text is the same for every order, so each connection prepares it once.
///
/// If the idempotency key was used before, `placed` is empty and so is everything written
/// from it: nothing is written and no row is returned.
struct InsertOrder<'a> {
    id: Uuid,
    customer_id: &'a str,
    idempotency_key: &'a str,
    request_hash: &'a str,
    correlation_id: &'a str,
    skus: Vec<&'a str>,
    quantities: Vec<i32>,
    event: messaging::outbox::NewEvent<'a>,
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

/// What a cancellation request did.
#[derive(Debug)]
pub enum Cancellation {
    /// `OrderCancelled` was written; inventory will release the stock.
    Requested(OrderView),
    /// The order was already being cancelled; nothing new was written.
    AlreadyRequested(OrderView),
    /// The order is in a status that cannot be cancelled.
    NotCancellable(OrderStatus),
    NotFound,
}

/// Asks for one of `customer`'s orders to be cancelled. Pending and confirmed orders can be;
/// another customer's order is not found.
#[tracing::instrument(name = "order.cancel", skip_all, fields(order_id = %id), err)]
pub async fn cancel(
    conn: &mut AsyncPgConnection,
    id: OrderId,
    customer: &str,
    out: Outbox<'_>,
) -> QueryResult<Cancellation> {
    // The event continues the trace from this span (`order.accept`, `order.cancel`, `order.ship`).
    let trace = &platform::trace::from_here(out.trace);
    let out = Outbox::new(out.topic, trace);
    let outcome = conn
        .transaction::<_, diesel::result::Error, _>(async |conn| {
            // The row lock serialises this with the consumer, and orders this order's events.
            let status: Option<String> = orders::table
                .find(id.0)
                .filter(orders::customer_id.eq(customer))
                .select(orders::status)
                .for_update()
                .first(conn)
                .await
                .optional()?;
            let Some(status) = status.as_deref().and_then(OrderStatus::parse) else {
                return Ok(None);
            };
            match status.after(Step::CancelRequested) {
                Some(to) => {
                    transition(conn, id, &[status], to, None).await?;
                    out.write(conn, OrderCancelled { order_id: id }).await?;
                    Ok(Some(Ok(true)))
                }
                None if status == OrderStatus::Cancelling => Ok(Some(Ok(false))),
                None => Ok(Some(Err(status))),
            }
        })
        .await?;
    Ok(match outcome {
        None => Cancellation::NotFound,
        Some(Err(status)) => Cancellation::NotCancellable(status),
        Some(Ok(requested)) => {
            let view = find(conn, id).await?.ok_or(diesel::result::Error::NotFound)?;
            if requested { Cancellation::Requested(view) } else { Cancellation::AlreadyRequested(view) }
        }
    })
}

/// What a ship request did.
#[derive(Debug)]
pub enum ShipRequest {
    /// `OrderReadyToShip` was written; inventory will take the stock out.
    Requested(OrderView),
    /// Shipping had started already: nothing was written. `replayed` when this is a retry
    /// of the request that started it (same Idempotency-Key).
    AlreadyRequested {
        view: OrderView,
        replayed: bool,
    },
    /// The order is in a status that cannot ship (not confirmed, or cancelled).
    NotShippable(OrderStatus),
    NotFound,
}

/// Starts shipping a confirmed order (any customer's: the caller is a fulfilment operator),
/// remembering `idempotency_key`. A second request changes nothing and is answered with the
/// order as it is.
#[tracing::instrument(name = "order.ship", skip_all, fields(order_id = %id), err)]
pub async fn ship(
    conn: &mut AsyncPgConnection,
    id: OrderId,
    idempotency_key: &str,
    out: Outbox<'_>,
) -> QueryResult<ShipRequest> {
    // The event continues the trace from this span (`order.accept`, `order.cancel`, `order.ship`).
    let trace = &platform::trace::from_here(out.trace);
    let out = Outbox::new(out.topic, trace);
    let outcome = conn
        .transaction::<_, diesel::result::Error, _>(async |conn| {
            // The row lock serialises this with a cancellation and with the consumer.
            let row: Option<(String, Option<String>)> = orders::table
                .find(id.0)
                .select((orders::status, orders::ship_idempotency_key))
                .for_update()
                .first(conn)
                .await
                .optional()?;
            let Some((status, earlier_key)) = row else {
                return Ok(None);
            };
            let status = status_of(&status)?;
            match status.after(Step::ShipRequested) {
                Some(to) => {
                    transition(conn, id, &[status], to, None).await?;
                    diesel::update(orders::table.find(id.0))
                        .set(orders::ship_idempotency_key.eq(idempotency_key))
                        .execute(conn)
                        .await?;
                    out.write(conn, OrderReadyToShip { order_id: id }).await?;
                    Ok(Some(Ok(None)))
                }
                None if matches!(status, OrderStatus::Shipping | OrderStatus::Shipped) => {
                    Ok(Some(Ok(Some(earlier_key.as_deref() == Some(idempotency_key)))))
                }
                None => Ok(Some(Err(status))),
            }
        })
        .await?;
    Ok(match outcome {
        None => ShipRequest::NotFound,
        Some(Err(status)) => ShipRequest::NotShippable(status),
        Some(Ok(earlier)) => {
            let view = find(conn, id).await?.ok_or(diesel::result::Error::NotFound)?;
            match earlier {
                None => ShipRequest::Requested(view),
                Some(replayed) => ShipRequest::AlreadyRequested { view, replayed },
            }
        }
    })
}

/// Applies `step` to an order ([`OrderStatus::after`]): see [`transition`].
pub async fn step(
    conn: &mut AsyncPgConnection,
    id: OrderId,
    step: Step,
    reason: Option<&str>,
) -> QueryResult<Option<DateTime<Utc>>> {
    transition(conn, id, step.from(), step.to(), reason).await
}

/// Moves an order from one of `from` to `to`, recording the change in its history. Returns
/// when the order was accepted if it moved, `None` (and changes nothing) if the order is not
/// in one of `from`. Must run inside the caller's transaction.
pub async fn transition(
    conn: &mut AsyncPgConnection,
    id: OrderId,
    from: &[OrderStatus],
    to: OrderStatus,
    reason: Option<&str>,
) -> QueryResult<Option<DateTime<Utc>>> {
    let statement = Transition {
        id: id.0,
        from: from.iter().map(|s| s.as_str()).collect(),
        to: to.as_str(),
        // The reason of any other change is in the history only.
        rejection_reason: reason.filter(|_| to == OrderStatus::Rejected),
        reason,
    };
    statement.get_result(conn).await.optional()
}

/// The statement [`transition`] runs: the status change and its history entry, one round
/// trip (decision 0021).
struct Transition<'a> {
    id: Uuid,
    from: Vec<&'a str>,
    to: &'a str,
    rejection_reason: Option<&'a str>,
    reason: Option<&'a str>,
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

/// A status as stored; the table's CHECK constraint allows only the known ones.
fn status_of(raw: &str) -> QueryResult<OrderStatus> {
    OrderStatus::parse(raw)
        .ok_or_else(|| diesel::result::Error::DeserializationError(format!("unknown order status {raw:?}").into()))
}
