//! Reserving, releasing and shipping stock. Each function runs inside the consumer's inbox
//! transaction: stock rows, ledger rows, the reservation record and the outgoing event
//! commit together.
//!
//! One room, over 300 lines: the inbox transactions of inventory (reserve, release, ship,
//! refuse), which read and lock the same rows in the same order. Apart: the rules they apply
//! ([`decide`]), the statement that moves stock ([`statement`]) and the API's view ([`view`]).
//!
//! A SKU has `on_hand` units in the warehouse, `reserved` of them promised to confirmed
//! orders; `available = on_hand − reserved` is what can still be sold (decision 0019). A
//! reservation moves units into `reserved`, a release moves them back, a shipment takes them
//! out of both. Each movement appends the SKU's new level to `stock_levels`, under the lock of
//! its `products` row, which is locked but never updated (decision 0036).
//!
//! Reservation is all-or-nothing: the order's product rows are locked in SKU order (so two
//! consumers never deadlock), every line is checked, and only if all fit is stock reserved,
//! each with a conditional append that can never take `available` below zero.

mod decide;
pub mod retention;
mod statement;
mod view;

pub use decide::*;
use messaging::outbox::Outbox;
use statement::{MoveStock, Movement};
pub use view::{StockView, add_product, find, list};

use std::collections::HashMap;

use crate::tables::{products, reservations, stock_ledger};
use crate::views::stock;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use schema::events::{
    InventoryRefused, InventoryRejected, InventoryReleased, InventoryReserved, InventoryShipped, Line, OrderCancelled,
    OrderPlaced, OrderReadyToShip, RefusedRequest, Shortfall,
};
use schema::{Envelope, EventId, OrderId, Quantity, Sku};
use tracing::Instrument as _;

/// Reserves every line of `placed`, or none, and writes the decision to the outbox.
#[tracing::instrument(name = "stock.reserve", skip_all, fields(order_id = %placed.order_id), err)]
pub async fn reserve(
    conn: &mut AsyncPgConnection,
    cause: EventId,
    placed: &OrderPlaced,
    out: Outbox<'_>,
) -> Result<Reservation, StockError> {
    let order_id = placed.order_id;
    let earlier = decision(conn, order_id).await?;
    let mut lines = placed.lines.clone();
    lines.sort_by(|a, b| a.sku.cmp(&b.sku));
    let reserved = out.envelope(InventoryReserved { order_id, lines: placed.lines.clone() });
    let shortfalls = match (earlier, lines.as_slice()) {
        (Some(_), _) => Vec::new(),
        // One line (every order of a flash sale, most orders): the product row is locked only
        // when the last committed level has the units, and then only from that statement to
        // the commit (decision 0021); the append re-checks under the lock. When they are not
        // there, what is left is read without a lock to say so: on a sold-out SKU no rejection
        // waits for the row.
        (None, [line]) => {
            if lock_if_it_fits(conn, line).await?
                && try_move_line(conn, order_id, cause, line, Movement::Reserve, out.topic, &reserved).await?
            {
                return Ok(Reservation::Reserved);
            }
            match shortfalls(conn, &lines, Lock::No).await? {
                // Units came back between the update and the read: decide under the lock.
                none if none.is_empty() => shortfalls(conn, &lines, Lock::Rows).await?,
                short => short,
            }
        }
        // Several lines: every row is locked, in SKU order, and every line checked, so that
        // all are reserved or none.
        (None, _) => shortfalls(conn, &lines, Lock::Rows).await?,
    };
    match decide_placement(earlier, shortfalls.is_empty()) {
        Placement::AlreadyDecided(earlier) => {
            // The order was cancelled before it reached inventory, or an earlier event about it
            // could not be processed and was answered with a rejection.
            let reason = match earlier {
                Reservation::Cancelled => "the order was cancelled before stock was reserved".to_owned(),
                other => format!("inventory had already decided this order ({})", other.as_str()),
            };
            let rejected = InventoryRejected { order_id, reason, shortfalls: vec![] };
            out.write(conn, rejected).await?;
            Ok(Reservation::Rejected)
        }
        Placement::Short => {
            let rejected = InventoryRejected::from_shortfalls(order_id, shortfalls);
            record_decision(conn, order_id, Reservation::Rejected, Some(&rejected.reason)).await?;
            out.write(conn, rejected).await?;
            Ok(Reservation::Rejected)
        }
        Placement::Reserve => {
            move_stock(conn, order_id, cause, &lines, Movement::Reserve, out.topic, &reserved).await?;
            Ok(Reservation::Reserved)
        }
    }
}

/// Locks, in SKU order, the stock rows that a batch of events will change: the products of
/// `skus` (its placements' lines) and those in the ledgers of `orders` (its cancellations and
/// shipments). Every batch locks in this order before it changes anything, so two batches
/// (two instances of inventory) never hold one row each while waiting for the other's
/// (decision 0025). Rows locked here stay locked until the batch ends, as its changes would
/// keep them.
#[tracing::instrument(name = "stock.lock", skip_all)]
pub async fn lock_in_sku_order(conn: &mut AsyncPgConnection, skus: &[&str], orders: &[uuid::Uuid]) -> QueryResult<()> {
    let in_ledgers = stock_ledger::table.filter(stock_ledger::order_id.eq_any(orders)).select(stock_ledger::sku);
    products::table
        .filter(products::sku.eq_any(skus).or(products::sku.eq_any(in_ledgers)))
        .order(products::sku)
        .select(products::sku)
        .for_update()
        .load::<String>(conn)
        .await?;
    Ok(())
}

/// Whether [`shortfalls`] locks the stock rows it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lock {
    /// Locked until the transaction ends, so that what was read still holds when it reserves.
    Rows,
    /// Read as last committed, to explain a rejection.
    No,
}

/// The lines of `lines` (sorted by SKU, the order the rows are locked in) that the stock left
/// cannot cover.
async fn shortfalls(conn: &mut AsyncPgConnection, lines: &[Line], lock: Lock) -> Result<Vec<Shortfall>, StockError> {
    let skus: Vec<&str> = lines.iter().map(|l| l.sku.as_str()).collect();
    if lock == Lock::Rows {
        // Locked first, read after: this statement's snapshot is taken once the locks are held,
        // so it sees the levels their last holders appended.
        lock_products(conn, &skus).instrument(tracing::info_span!("stock.lock")).await?;
    }
    let rows: Vec<(String, i32)> = stock::table
        .filter(stock::sku.eq_any(&skus))
        .order(stock::sku)
        .select((stock::sku, stock::available))
        .load(conn)
        .await?;
    let available: HashMap<String, i32> = rows.into_iter().collect();
    Ok(lines
        .iter()
        .filter_map(|line| {
            let left = available.get(line.sku.as_str()).copied();
            let fits = left.is_some_and(|left| left >= line.quantity.get());
            (!fits).then(|| Shortfall { sku: line.sku.clone(), requested: line.quantity.get(), available: left })
        })
        .collect())
}

/// Locks the product rows of `skus` in SKU order, until the transaction ends: whoever holds a
/// product's lock is the only one appending to its levels.
async fn lock_products(conn: &mut AsyncPgConnection, skus: &[&str]) -> QueryResult<()> {
    products::table
        .filter(products::sku.eq_any(skus))
        .order(products::sku)
        .select(products::sku)
        .for_update()
        .load::<String>(conn)
        .await
        .map(drop)
}

/// Locks `line`'s product row if its last committed level has the units: whether it did. A
/// row that does not qualify is not locked, so this never waits for a sold-out SKU. The level
/// is read before any wait for the lock, so the append that follows checks again.
#[tracing::instrument(name = "stock.lock", skip_all, fields(sku = %line.sku))]
async fn lock_if_it_fits(conn: &mut AsyncPgConnection, line: &Line) -> QueryResult<bool> {
    let fits = stock::table
        .filter(stock::sku.eq(line.sku.as_str()))
        .filter(stock::available.ge(line.quantity.get()))
        .select(stock::sku);
    let locked: Vec<String> = products::table
        .filter(products::sku.eq(line.sku.as_str()))
        .filter(diesel::dsl::exists(fits))
        .select(products::sku)
        .for_update()
        .load(conn)
        .await?;
    Ok(!locked.is_empty())
}

/// Answers a placement that could not be processed: the order is rejected with `reason`,
/// unless inventory had already decided it (then nothing changes).
#[tracing::instrument(name = "stock.refuse", skip_all, fields(%order_id), err)]
pub async fn refuse(
    conn: &mut AsyncPgConnection,
    order_id: OrderId,
    reason: &str,
    out: Outbox<'_>,
) -> Result<Option<Reservation>, StockError> {
    if let Refusal::AlreadyDecided(earlier) = decide_refused_placement(decision(conn, order_id).await?) {
        return Ok(Some(earlier));
    }
    record_decision(conn, order_id, Reservation::Rejected, Some(reason)).await?;
    let rejected = InventoryRejected { order_id, reason: reason.to_owned(), shortfalls: vec![] };
    out.write(conn, rejected).await?;
    Ok(None)
}

/// Answers an event about `order_id` that could not be processed with what inventory holds
/// for the order, changing nothing.
#[tracing::instrument(name = "stock.report_refusal", skip_all, fields(%order_id, refused_type = refused_type.event_type()), err)]
pub async fn report_refusal(
    conn: &mut AsyncPgConnection,
    order_id: OrderId,
    refused_type: RefusedRequest,
    reason: &str,
    out: Outbox<'_>,
) -> Result<Option<Reservation>, StockError> {
    let held = decision(conn, order_id).await?;
    let refused = InventoryRefused {
        order_id,
        refused_type,
        reason: reason.to_owned(),
        reservation: held.map(Reservation::status),
    };
    out.write(conn, refused).await?;
    Ok(held)
}

/// Puts back whatever was reserved for a cancelled order and writes `InventoryReleased`.
#[tracing::instrument(name = "stock.release", skip_all, fields(order_id = %cancelled.order_id), err)]
pub async fn release(
    conn: &mut AsyncPgConnection,
    cause: EventId,
    cancelled: &OrderCancelled,
    out: Outbox<'_>,
) -> Result<Vec<Line>, StockError> {
    let order_id = cancelled.order_id;
    match decide_cancellation(decision(conn, order_id).await?) {
        Cancellation::PutBack => {
            let lines = reserved_lines(conn, order_id).await?;
            let event = out.envelope(InventoryReleased { order_id, lines: lines.clone() });
            lock_lines(conn, &lines).await?;
            move_stock(conn, order_id, cause, &lines, Movement::Release, out.topic, &event).await?;
            return Ok(lines);
        }
        Cancellation::Nothing => {}
        Cancellation::RememberCancelled => {
            record_decision(conn, order_id, Reservation::Cancelled, Some("cancelled before it was reserved")).await?
        }
    }
    // Nothing was held: the release says so, with no lines.
    let event = InventoryReleased { order_id, lines: Vec::new() };
    out.write(conn, event).await?;
    Ok(Vec::new())
}

/// Takes the units reserved for a confirmed order out of the warehouse and writes
/// `InventoryShipped`; refuses (changing nothing, saying what inventory holds) when nothing is
/// reserved for it.
#[tracing::instrument(name = "stock.ship", skip_all, fields(order_id = %ready.order_id), err)]
pub async fn ship(
    conn: &mut AsyncPgConnection,
    cause: EventId,
    ready: &OrderReadyToShip,
    out: Outbox<'_>,
) -> Result<Option<Vec<Line>>, StockError> {
    let order_id = ready.order_id;
    let earlier = decision(conn, order_id).await?;
    match decide_shipment(earlier) {
        Shipment::TakeOut => {
            let lines = reserved_lines(conn, order_id).await?;
            let shipped = out.envelope(InventoryShipped { order_id, lines: lines.clone() });
            lock_lines(conn, &lines).await?;
            move_stock(conn, order_id, cause, &lines, Movement::Ship, out.topic, &shipped).await?;
            Ok(Some(lines))
        }
        Shipment::AlreadyShipped => {
            let lines = ledger_lines(conn, order_id, Movement::Ship).await?;
            let shipped = InventoryShipped { order_id, lines: lines.clone() };
            out.write(conn, shipped).await?;
            Ok(Some(lines))
        }
        Shipment::Refuse => {
            let reason = match earlier {
                None => "inventory has not reserved stock for this order".to_owned(),
                Some(held) => format!("inventory holds no reserved stock for this order ({})", held.as_str()),
            };
            let refused = InventoryRefused {
                order_id,
                refused_type: RefusedRequest::OrderReadyToShip,
                reason,
                reservation: earlier.map(Reservation::status),
            };
            out.write(conn, refused).await?;
            Ok(None)
        }
    }
}

/// Locks the product rows of `lines` (by SKU, as the ledger gives them) before their stock moves.
async fn lock_lines(conn: &mut AsyncPgConnection, lines: &[Line]) -> QueryResult<()> {
    let skus: Vec<&str> = lines.iter().map(|line| line.sku.as_str()).collect();
    lock_products(conn, &skus).await
}

/// The lines reserved for `order_id`, as the ledger recorded them.
async fn reserved_lines(conn: &mut AsyncPgConnection, order_id: OrderId) -> Result<Vec<Line>, StockError> {
    ledger_lines(conn, order_id, Movement::Reserve).await
}

/// The lines of `order_id`'s ledger rows of one kind, by SKU.
async fn ledger_lines(
    conn: &mut AsyncPgConnection,
    order_id: OrderId,
    movement: Movement,
) -> Result<Vec<Line>, StockError> {
    let rows: Vec<(String, i32)> = stock_ledger::table
        .filter(stock_ledger::order_id.eq(order_id.0))
        .filter(stock_ledger::reason.eq(movement.reason()))
        .order(stock_ledger::sku)
        .select((stock_ledger::sku, stock_ledger::delta))
        .load(conn)
        .await?;
    rows.into_iter()
        .map(|(sku, delta)| {
            let sku = Sku::parse(&sku).map_err(|e| StockError::Impossible(format!("ledger sku: {e}")))?;
            let quantity = Quantity::parse(i64::from(delta).abs())
                .map_err(|e| StockError::Impossible(format!("ledger delta: {e}")))?;
            Ok(Line { sku, quantity })
        })
        .collect()
}

/// Moves the units of every line, writes the matching ledger rows, records the decision and
/// writes `event` to the outbox: one statement ([`MoveStock`]), run with the lines' product
/// rows locked. Each append is conditional, so `available` and `reserved` can never go below
/// zero even if a caller forgot to check: a line that cannot move fails the whole transaction.
async fn move_stock<E: schema::Event>(
    conn: &mut AsyncPgConnection,
    order_id: OrderId,
    cause: EventId,
    lines: &[Line],
    movement: Movement,
    topic: &str,
    event: &Envelope<E>,
) -> Result<(), StockError> {
    let moved: i64 = MoveStock::new(order_id, cause, lines, movement, topic, event)?.get_result(conn).await?;
    if moved != lines.len() as i64 {
        let what: Vec<String> = lines.iter().map(|line| format!("{} of {}", line.quantity.get(), line.sku)).collect();
        return Err(StockError::Impossible(format!("cannot {} {}", movement.reason(), what.join(", "))));
    }
    Ok(())
}

/// [`move_stock`] for one line, where not having the units is an answer, not an error:
/// whether it moved. If it did not, nothing was written.
#[tracing::instrument(name = "stock.append", skip_all, fields(sku = %line.sku))]
async fn try_move_line<E: schema::Event>(
    conn: &mut AsyncPgConnection,
    order_id: OrderId,
    cause: EventId,
    line: &Line,
    movement: Movement,
    topic: &str,
    event: &Envelope<E>,
) -> Result<bool, StockError> {
    let lines = std::slice::from_ref(line);
    let moved: i64 = MoveStock::new(order_id, cause, lines, movement, topic, event)?.get_result(conn).await?;
    Ok(moved == 1)
}

async fn decision(conn: &mut AsyncPgConnection, order_id: OrderId) -> QueryResult<Option<Reservation>> {
    let status: Option<String> =
        reservations::table.find(order_id.0).select(reservations::status).for_update().first(conn).await.optional()?;
    Ok(status.and_then(|s| Reservation::ALL.into_iter().find(|r| r.as_str() == s)))
}

async fn record_decision(
    conn: &mut AsyncPgConnection,
    order_id: OrderId,
    status: Reservation,
    reason: Option<&str>,
) -> QueryResult<()> {
    diesel::insert_into(reservations::table)
        .values((
            reservations::order_id.eq(order_id.0),
            reservations::status.eq(status.as_str()),
            reservations::reason.eq(reason),
        ))
        .execute(conn)
        .await
        .map(drop)
}

/// Why stock could not change.
#[derive(Debug, thiserror::Error)]
pub enum StockError {
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
    /// A state that should be impossible (stock below zero, an unreadable ledger row). The
    /// transaction rolls back and the event is dead-lettered at once (`HandleError::Permanent`
    /// is a refusal: trying again gives the same answer), for an operator to look at.
    #[error("{0}")]
    Impossible(String),
}

impl From<StockError> for messaging::inbox::HandleError {
    fn from(error: StockError) -> Self {
        match error {
            StockError::Database(error) => Self::Database(error),
            StockError::Impossible(message) => Self::Permanent(message),
        }
    }
}
