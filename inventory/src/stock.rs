//! Reserving and releasing stock. Each function runs inside the consumer's inbox
//! transaction: stock rows, ledger rows, the reservation record and the outgoing event
//! commit together.
//!
//! Reservation is all-or-nothing: the order's product rows are locked in SKU order (so two
//! consumers never deadlock), every line is checked, and only if all fit is stock deducted,
//! each with a conditional update that can never go below zero.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use schema::envelope::Trace;
use schema::events::{
    InventoryRefused, InventoryRejected, InventoryReleased, InventoryReserved, Line, OrderCancelled, OrderPlaced,
    ReservationStatus, Shortfall,
};
use schema::tables::inventory_db::{products, reservations, stock_ledger};
use schema::{Envelope, EventId, OrderId, Quantity, Sku};

/// What inventory decided for an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reservation {
    Reserved,
    Rejected,
    Released,
    /// Cancelled before inventory saw the order.
    Cancelled,
}

impl Reservation {
    /// As other services are told it.
    fn status(self) -> ReservationStatus {
        match self {
            Self::Reserved => ReservationStatus::Reserved,
            Self::Rejected => ReservationStatus::Rejected,
            Self::Released => ReservationStatus::Released,
            Self::Cancelled => ReservationStatus::Cancelled,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "RESERVED",
            Self::Rejected => "REJECTED",
            Self::Released => "RELEASED",
            Self::Cancelled => "CANCELLED",
        }
    }
}

/// What a placement does, given what inventory decided for the order before and whether
/// every line fits in the stock left. The rule [`reserve`] applies, and the protocol model
/// (`model/`) checks in every interleaving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Decided before (cancelled before it arrived, or refused): rejected, nothing reserved.
    AlreadyDecided(Reservation),
    /// A line does not fit: rejected, nothing reserved.
    Short,
    /// Every line is reserved.
    Reserve,
}

pub fn decide_placement(earlier: Option<Reservation>, every_line_fits: bool) -> Placement {
    match earlier {
        Some(earlier) => Placement::AlreadyDecided(earlier),
        None if every_line_fits => Placement::Reserve,
        None => Placement::Short,
    }
}

/// What a cancellation does, given what inventory decided for the order before ([`release`]
/// applies it; so does the protocol model). Every cancellation is answered with a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancellation {
    /// Reserved: the stock goes back and the decision becomes `Released`.
    PutBack,
    /// Not seen yet: remembered as `Cancelled`, so that a placement arriving later is rejected.
    RememberCancelled,
    /// Rejected or released already: nothing is held.
    Nothing,
}

pub fn decide_cancellation(earlier: Option<Reservation>) -> Cancellation {
    match earlier {
        Some(Reservation::Reserved) => Cancellation::PutBack,
        None => Cancellation::RememberCancelled,
        Some(_) => Cancellation::Nothing,
    }
}

/// Reserves every line of `placed`, or none, and writes the decision to the outbox.
pub async fn reserve(
    conn: &mut AsyncPgConnection,
    cause: EventId,
    placed: &OrderPlaced,
    trace: &Trace,
    topic: &str,
) -> Result<Reservation, StockError> {
    let order_id = placed.order_id;
    let earlier = decision(conn, order_id).await?;
    let mut lines = placed.lines.clone();
    lines.sort_by(|a, b| a.sku.cmp(&b.sku));
    // The stock rows are read (and locked) only for an order not decided before.
    let shortfalls = match earlier {
        Some(_) => Vec::new(),
        None => shortfalls(conn, &lines).await?,
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
            messaging::outbox::enqueue(conn, topic, &Envelope::new(rejected, trace)).await?;
            Ok(Reservation::Rejected)
        }
        Placement::Short => {
            let rejected = InventoryRejected::from_shortfalls(order_id, shortfalls);
            record_decision(conn, order_id, Reservation::Rejected, Some(&rejected.reason)).await?;
            messaging::outbox::enqueue(conn, topic, &Envelope::new(rejected, trace)).await?;
            Ok(Reservation::Rejected)
        }
        Placement::Reserve => {
            for line in &lines {
                change_stock(conn, order_id, cause, &line.sku, -line.quantity.get(), "reserve").await?;
            }
            record_decision(conn, order_id, Reservation::Reserved, None).await?;
            let reserved = InventoryReserved { order_id, lines: placed.lines.clone() };
            messaging::outbox::enqueue(conn, topic, &Envelope::new(reserved, trace)).await?;
            Ok(Reservation::Reserved)
        }
    }
}

/// The lines of `lines` (sorted by SKU, the order the rows are locked in) that the stock left
/// cannot cover, with the stock rows locked until the transaction ends.
async fn shortfalls(conn: &mut AsyncPgConnection, lines: &[Line]) -> Result<Vec<Shortfall>, StockError> {
    let skus: Vec<&str> = lines.iter().map(|l| l.sku.as_str()).collect();
    let available: HashMap<String, i32> = products::table
        .filter(products::sku.eq_any(&skus))
        .order(products::sku)
        .select((products::sku, products::available))
        .for_update()
        .load::<(String, i32)>(conn)
        .await?
        .into_iter()
        .collect();
    Ok(lines
        .iter()
        .filter_map(|line| {
            let left = available.get(line.sku.as_str()).copied();
            let fits = left.is_some_and(|left| left >= line.quantity.get());
            (!fits).then(|| Shortfall { sku: line.sku.clone(), requested: line.quantity.get(), available: left })
        })
        .collect())
}

/// Answers a placement that could not be processed: the order is rejected with `reason`,
/// unless inventory had already decided it (then nothing changes).
pub async fn refuse(
    conn: &mut AsyncPgConnection,
    order_id: OrderId,
    reason: &str,
    trace: &Trace,
    topic: &str,
) -> Result<Option<Reservation>, StockError> {
    if let Some(earlier) = decision(conn, order_id).await? {
        return Ok(Some(earlier));
    }
    record_decision(conn, order_id, Reservation::Rejected, Some(reason)).await?;
    let rejected = InventoryRejected { order_id, reason: reason.to_owned(), shortfalls: vec![] };
    messaging::outbox::enqueue(conn, topic, &Envelope::new(rejected, trace)).await?;
    Ok(None)
}

/// Answers an event about `order_id` that could not be processed with what inventory holds
/// for the order, changing nothing.
pub async fn report_refusal(
    conn: &mut AsyncPgConnection,
    order_id: OrderId,
    refused_type: &str,
    reason: &str,
    trace: &Trace,
    topic: &str,
) -> Result<Option<Reservation>, StockError> {
    let held = decision(conn, order_id).await?;
    let refused = InventoryRefused {
        order_id,
        refused_type: refused_type.to_owned(),
        reason: reason.to_owned(),
        reservation: held.map(Reservation::status),
    };
    messaging::outbox::enqueue(conn, topic, &Envelope::new(refused, trace)).await?;
    Ok(held)
}

/// Puts back whatever was reserved for a cancelled order and writes `InventoryReleased`.
pub async fn release(
    conn: &mut AsyncPgConnection,
    cause: EventId,
    cancelled: &OrderCancelled,
    trace: &Trace,
    topic: &str,
) -> Result<Vec<Line>, StockError> {
    let order_id = cancelled.order_id;
    let mut released = Vec::new();
    match decide_cancellation(decision(conn, order_id).await?) {
        Cancellation::PutBack => {
            let reserved: Vec<(String, i32)> = stock_ledger::table
                .filter(stock_ledger::order_id.eq(order_id.0))
                .filter(stock_ledger::reason.eq("reserve"))
                .order(stock_ledger::sku)
                .select((stock_ledger::sku, stock_ledger::delta))
                .load(conn)
                .await?;
            for (sku, delta) in reserved {
                let sku = Sku::parse(&sku).map_err(|e| StockError::Impossible(format!("ledger sku: {e}")))?;
                change_stock(conn, order_id, cause, &sku, -delta, "release").await?;
                let quantity = Quantity::parse(i64::from(-delta))
                    .map_err(|e| StockError::Impossible(format!("ledger delta: {e}")))?;
                released.push(Line { sku, quantity });
            }
            update_decision(conn, order_id, Reservation::Released).await?;
        }
        Cancellation::Nothing => {}
        Cancellation::RememberCancelled => {
            record_decision(conn, order_id, Reservation::Cancelled, Some("cancelled before it was reserved")).await?
        }
    }
    let event = InventoryReleased { order_id, lines: released.clone() };
    messaging::outbox::enqueue(conn, topic, &Envelope::new(event, trace)).await?;
    Ok(released)
}

/// Changes one SKU's stock and writes the matching ledger row. The update is conditional,
/// so stock can never go below zero even if a caller forgot to check.
async fn change_stock(
    conn: &mut AsyncPgConnection,
    order_id: OrderId,
    cause: EventId,
    sku: &Sku,
    delta: i32,
    reason: &str,
) -> Result<(), StockError> {
    let updated = diesel::update(products::table.find(sku.as_str()).filter(products::available.ge(-delta)))
        .set((products::available.eq(products::available + delta), products::updated_at.eq(diesel::dsl::now)))
        .execute(conn)
        .await?;
    if updated != 1 {
        return Err(StockError::Impossible(format!("stock of {sku} cannot change by {delta}")));
    }
    diesel::insert_into(stock_ledger::table)
        .values((
            stock_ledger::order_id.eq(order_id.0),
            stock_ledger::sku.eq(sku.as_str()),
            stock_ledger::delta.eq(delta),
            stock_ledger::reason.eq(reason),
            stock_ledger::event_id.eq(cause.0),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

async fn decision(conn: &mut AsyncPgConnection, order_id: OrderId) -> QueryResult<Option<Reservation>> {
    let status: Option<String> =
        reservations::table.find(order_id.0).select(reservations::status).for_update().first(conn).await.optional()?;
    Ok(status.and_then(|s| {
        [Reservation::Reserved, Reservation::Rejected, Reservation::Released, Reservation::Cancelled]
            .into_iter()
            .find(|r| r.as_str() == s)
    }))
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

async fn update_decision(conn: &mut AsyncPgConnection, order_id: OrderId, status: Reservation) -> QueryResult<()> {
    diesel::update(reservations::table.find(order_id.0))
        .set((reservations::status.eq(status.as_str()), reservations::updated_at.eq(diesel::dsl::now)))
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
    /// transaction rolls back; the event is tried again a few times, then dead-lettered.
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

/// One product as the API shows it.
#[derive(Debug, Clone, Queryable, Selectable, serde::Serialize, utoipa::ToSchema)]
#[diesel(table_name = products, check_for_backend(diesel::pg::Pg))]
pub struct StockView {
    pub sku: String,
    pub name: String,
    pub available: i32,
}

pub async fn list(conn: &mut AsyncPgConnection) -> QueryResult<Vec<StockView>> {
    products::table.order(products::sku).select(StockView::as_select()).load(conn).await
}

pub async fn find(conn: &mut AsyncPgConnection, sku: &Sku) -> QueryResult<Option<StockView>> {
    products::table.find(sku.as_str()).select(StockView::as_select()).first(conn).await.optional()
}

/// Adds a product to the catalogue with `stock` units; false if the SKU is already there.
/// New stock enters as the product's initial stock, so the books still balance
/// (initial + ledger = available).
pub async fn add_product(conn: &mut AsyncPgConnection, sku: &Sku, name: &str, stock: i32) -> QueryResult<bool> {
    let inserted = diesel::insert_into(products::table)
        .values((
            products::sku.eq(sku.as_str()),
            products::name.eq(name),
            products::initial_stock.eq(stock),
            products::available.eq(stock),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(inserted == 1)
}
