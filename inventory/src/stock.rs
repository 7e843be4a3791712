//! Reserving, releasing and shipping stock. Each function runs inside the consumer's inbox
//! transaction: stock rows, ledger rows, the reservation record and the outgoing event
//! commit together.
//!
//! A SKU has `on_hand` units in the warehouse, `reserved` of them promised to confirmed
//! orders; `available = on_hand − reserved` is what can still be sold (decision 0019). A
//! reservation moves units into `reserved`, a release moves them back, a shipment takes them
//! out of both.
//!
//! Reservation is all-or-nothing: the order's product rows are locked in SKU order (so two
//! consumers never deadlock), every line is checked, and only if all fit is stock reserved,
//! each with a conditional update that can never take `available` below zero.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use schema::Event as _;
use schema::envelope::Trace;
use schema::events::{
    InventoryRefused, InventoryRejected, InventoryReleased, InventoryReserved, InventoryShipped, Line, OrderCancelled,
    OrderPlaced, OrderReadyToShip, ReservationStatus, Shortfall,
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
    /// Reserved, then shipped: the units left the warehouse.
    Shipped,
}

impl Reservation {
    const ALL: [Self; 5] = [Self::Reserved, Self::Rejected, Self::Released, Self::Cancelled, Self::Shipped];

    /// As other services are told it.
    pub fn status(self) -> ReservationStatus {
        match self {
            Self::Reserved => ReservationStatus::Reserved,
            Self::Rejected => ReservationStatus::Rejected,
            Self::Released => ReservationStatus::Released,
            Self::Cancelled => ReservationStatus::Cancelled,
            Self::Shipped => ReservationStatus::Shipped,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "RESERVED",
            Self::Rejected => "REJECTED",
            Self::Released => "RELEASED",
            Self::Cancelled => "CANCELLED",
            Self::Shipped => "SHIPPED",
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
    /// Rejected, released or shipped already: nothing is held to put back.
    Nothing,
}

pub fn decide_cancellation(earlier: Option<Reservation>) -> Cancellation {
    match earlier {
        Some(Reservation::Reserved) => Cancellation::PutBack,
        None => Cancellation::RememberCancelled,
        Some(_) => Cancellation::Nothing,
    }
}

/// What a request to ship does, given what inventory decided for the order before ([`ship`]
/// applies it; so does the protocol model).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shipment {
    /// Reserved: the units leave `reserved` and `on_hand`; the decision becomes `Shipped`.
    TakeOut,
    /// Shipped before: answered again, nothing changes.
    AlreadyShipped,
    /// Nothing is reserved for the order (never seen, rejected, released, cancelled): refused
    /// with what inventory holds, nothing changes.
    Refuse,
}

pub fn decide_shipment(earlier: Option<Reservation>) -> Shipment {
    match earlier {
        Some(Reservation::Reserved) => Shipment::TakeOut,
        Some(Reservation::Shipped) => Shipment::AlreadyShipped,
        _ => Shipment::Refuse,
    }
}

/// How stock moves, and the sign of the ledger row that records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Movement {
    /// `reserved += q`; ledger `−q`.
    Reserve,
    /// `reserved −= q`; ledger `+q`.
    Release,
    /// `reserved −= q`, `on_hand −= q`; ledger `−q`.
    Ship,
}

impl Movement {
    fn reason(self) -> &'static str {
        match self {
            Self::Reserve => "reserve",
            Self::Release => "release",
            Self::Ship => "ship",
        }
    }

    fn ledger_delta(self, quantity: i32) -> i32 {
        match self {
            Self::Reserve | Self::Ship => -quantity,
            Self::Release => quantity,
        }
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
                change_stock(conn, order_id, cause, &line.sku, line.quantity.get(), Movement::Reserve).await?;
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
            for line in reserved_lines(conn, order_id).await? {
                change_stock(conn, order_id, cause, &line.sku, line.quantity.get(), Movement::Release).await?;
                released.push(line);
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

/// Takes the units reserved for a confirmed order out of the warehouse and writes
/// `InventoryShipped`; refuses (changing nothing, saying what inventory holds) when nothing is
/// reserved for it.
pub async fn ship(
    conn: &mut AsyncPgConnection,
    cause: EventId,
    ready: &OrderReadyToShip,
    trace: &Trace,
    topic: &str,
) -> Result<Option<Vec<Line>>, StockError> {
    let order_id = ready.order_id;
    let earlier = decision(conn, order_id).await?;
    match decide_shipment(earlier) {
        Shipment::TakeOut => {
            let lines = reserved_lines(conn, order_id).await?;
            for line in &lines {
                change_stock(conn, order_id, cause, &line.sku, line.quantity.get(), Movement::Ship).await?;
            }
            update_decision(conn, order_id, Reservation::Shipped).await?;
            let shipped = InventoryShipped { order_id, lines: lines.clone() };
            messaging::outbox::enqueue(conn, topic, &Envelope::new(shipped, trace)).await?;
            Ok(Some(lines))
        }
        Shipment::AlreadyShipped => {
            let lines = ledger_lines(conn, order_id, Movement::Ship).await?;
            let shipped = InventoryShipped { order_id, lines: lines.clone() };
            messaging::outbox::enqueue(conn, topic, &Envelope::new(shipped, trace)).await?;
            Ok(Some(lines))
        }
        Shipment::Refuse => {
            let reason = match earlier {
                None => "inventory has not reserved stock for this order".to_owned(),
                Some(held) => format!("inventory holds no reserved stock for this order ({})", held.as_str()),
            };
            let refused = InventoryRefused {
                order_id,
                refused_type: OrderReadyToShip::TYPE.to_owned(),
                reason,
                reservation: earlier.map(Reservation::status),
            };
            messaging::outbox::enqueue(conn, topic, &Envelope::new(refused, trace)).await?;
            Ok(None)
        }
    }
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

/// Moves `quantity` units of one SKU and writes the matching ledger row. Each update is
/// conditional, so `available` and `reserved` can never go below zero even if a caller
/// forgot to check.
async fn change_stock(
    conn: &mut AsyncPgConnection,
    order_id: OrderId,
    cause: EventId,
    sku: &Sku,
    quantity: i32,
    movement: Movement,
) -> Result<(), StockError> {
    let row = products::table.find(sku.as_str());
    let now = products::updated_at.eq(diesel::dsl::now);
    let updated = match movement {
        Movement::Reserve => {
            diesel::update(row.filter(products::available.ge(quantity)))
                .set((products::reserved.eq(products::reserved + quantity), now))
                .execute(conn)
                .await?
        }
        Movement::Release => {
            diesel::update(row.filter(products::reserved.ge(quantity)))
                .set((products::reserved.eq(products::reserved - quantity), now))
                .execute(conn)
                .await?
        }
        Movement::Ship => {
            diesel::update(row.filter(products::reserved.ge(quantity)))
                .set((
                    products::reserved.eq(products::reserved - quantity),
                    products::on_hand.eq(products::on_hand - quantity),
                    now,
                ))
                .execute(conn)
                .await?
        }
    };
    if updated != 1 {
        return Err(StockError::Impossible(format!("cannot {} {quantity} of {sku}", movement.reason())));
    }
    diesel::insert_into(stock_ledger::table)
        .values((
            stock_ledger::order_id.eq(order_id.0),
            stock_ledger::sku.eq(sku.as_str()),
            stock_ledger::delta.eq(movement.ledger_delta(quantity)),
            stock_ledger::reason.eq(movement.reason()),
            stock_ledger::event_id.eq(cause.0),
        ))
        .execute(conn)
        .await?;
    Ok(())
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
    /// What can still be sold: `on_hand − reserved`.
    pub available: i32,
    /// Units in the warehouse.
    pub on_hand: i32,
    /// Units promised to confirmed orders that have not shipped.
    pub reserved: i32,
}

pub async fn list(conn: &mut AsyncPgConnection) -> QueryResult<Vec<StockView>> {
    products::table.order(products::sku).select(StockView::as_select()).load(conn).await
}

pub async fn find(conn: &mut AsyncPgConnection, sku: &Sku) -> QueryResult<Option<StockView>> {
    products::table.find(sku.as_str()).select(StockView::as_select()).first(conn).await.optional()
}

/// Adds a product to the catalogue with `stock` units; false if the SKU is already there.
/// New stock enters as the product's initial stock and on hand, nothing reserved, so the books
/// still balance (on hand = initial − shipped, reserved = held, by the ledger).
pub async fn add_product(conn: &mut AsyncPgConnection, sku: &Sku, name: &str, stock: i32) -> QueryResult<bool> {
    let inserted = diesel::insert_into(products::table)
        .values((
            products::sku.eq(sku.as_str()),
            products::name.eq(name),
            products::initial_stock.eq(stock),
            products::on_hand.eq(stock),
            products::reserved.eq(0),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(inserted == 1)
}
