//! Every read and write of the order database. Each public function that changes state is
//! one transaction: state, history and outbox event commit together or not at all.
//!
//! Here the writes, each taking the order's row lock first (which orders an order's events);
//! the statements they run are [`statements`], the reads [`read`].

use crate::tables::orders;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl};
use messaging::outbox::Outbox;
use schema::OrderId;
use schema::events::{OrderCancelled, OrderPlaced, OrderReadyToShip};
use uuid::Uuid;

use crate::domain::{OrderStatus, PlaceOrder, Step};
use crate::view::{HistoryEntry, LineView, OrderView};

mod read;
mod statements;

pub use read::{find, find_for, recent};
use statements::{InsertOrder, Transition};

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
#[tracing::instrument(name = "order.transition", skip_all, fields(order_id = %id, to = to.as_str()), err)]
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

/// A status as stored; the table's CHECK constraint allows only the known ones.
fn status_of(raw: &str) -> QueryResult<OrderStatus> {
    OrderStatus::parse(raw)
        .ok_or_else(|| diesel::result::Error::DeserializationError(format!("unknown order status {raw:?}").into()))
}
