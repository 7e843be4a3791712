//! The one statement that moves stock ([`MoveStock`]): each line's new level, the ledger
//! rows, the decision and the outgoing event, so that the product rows, once locked, stay
//! locked only for that statement and the commit.

use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types;
use schema::events::Line;
use schema::{Envelope, EventId, OrderId};

use super::Reservation;

/// How stock moves, and the sign of the ledger row that records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Movement {
    /// `reserved + q`; ledger `−q`.
    Reserve,
    /// `reserved − q`; ledger `+q`.
    Release,
    /// `reserved − q`, `on_hand − q`; ledger `−q`.
    Ship,
}

impl Movement {
    /// The decision a movement records: a reservation is the order's first, a release or a
    /// shipment replaces it.
    fn decided(self) -> Decided {
        match self {
            Self::Reserve => Decided::First(Reservation::Reserved),
            Self::Release => Decided::Now(Reservation::Released),
            Self::Ship => Decided::Now(Reservation::Shipped),
        }
    }

    pub(super) fn reason(self) -> &'static str {
        match self {
            Self::Reserve => "reserve",
            Self::Release => "release",
            Self::Ship => "ship",
        }
    }
}

/// How [`move_stock`](super::move_stock) records inventory's decision for the order.
#[derive(Debug, Clone, Copy)]
enum Decided {
    /// The order's first decision.
    First(Reservation),
    /// A later one, replacing what was decided before.
    Now(Reservation),
}

/// The statement [`move_stock`](super::move_stock) runs:
///
/// ```sql
/// WITH wanted AS (SELECT … FROM unnest($skus, $quantities)),
///      moved AS (INSERT INTO stock_levels (sku, seq, on_hand, reserved)
///                SELECT wanted.sku, level.seq + 1, … FROM wanted
///                CROSS JOIN LATERAL (<the SKU's newest level>) level
///                WHERE <enough to move> RETURNING sku),
///      ledger AS (INSERT INTO stock_ledger … SELECT … FROM moved JOIN wanted),
///      complete AS (SELECT … FROM moved HAVING count(*) = $lines),
///      decided AS (INSERT INTO reservations … SELECT … FROM complete | UPDATE reservations …),
///      event AS (INSERT INTO outbox … SELECT … FROM complete)
/// SELECT count(*) FROM moved
/// ```
///
/// The caller holds the lock of every line's product row (decision 0036): the newest level
/// this statement reads is then the newest committed, and no one appends after it before the
/// commit. (A caller that forgot would not lose an update: a second row with the same `seq`
/// is refused by the key.)
///
/// The decision and the event are written only if every line moved. A line that did not
/// move appended nothing; the lines that did are rolled back by the caller's error
/// ([`move_stock`](super::move_stock)), and with one line there are none ([`try_move_line`](super::try_move_line)).
///
/// Its text depends on the movement and the kind of decision only; diesel prepares each
/// text once per connection (it is cached by its text, not by this type).
pub(super) struct MoveStock<'a> {
    lines: i64,
    order_id: uuid::Uuid,
    cause: uuid::Uuid,
    movement: Movement,
    skus: Vec<&'a str>,
    quantities: Vec<i32>,
    decided: Decided,
    event: messaging::outbox::NewEvent<'a>,
}

impl<'a> MoveStock<'a> {
    pub(super) fn new<E: schema::Event>(
        order_id: OrderId,
        cause: EventId,
        lines: &'a [Line],
        movement: Movement,
        topic: &'a str,
        event: &'a Envelope<E>,
    ) -> QueryResult<Self> {
        Ok(Self {
            lines: lines.len() as i64,
            order_id: order_id.0,
            cause: cause.0,
            movement,
            skus: lines.iter().map(|line| line.sku.as_str()).collect(),
            quantities: lines.iter().map(|line| line.quantity.get()).collect(),
            decided: movement.decided(),
            event: messaging::outbox::NewEvent::new(topic, event)?,
        })
    }
}

impl QueryId for MoveStock<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for MoveStock<'_> {
    /// How many lines moved.
    type SqlType = sql_types::BigInt;
}

impl QueryFragment<Pg> for MoveStock<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH wanted AS (SELECT wanted.sku, wanted.quantity FROM unnest(");
        platform::push_binds!(out,
            sql_types::Array<sql_types::Text> => &self.skus,
            sql_types::Array<sql_types::Integer> => &self.quantities,
        );
        out.push_sql(
            ") AS wanted (sku, quantity)), moved AS (INSERT INTO stock_levels (sku, seq, on_hand, reserved) \
             SELECT wanted.sku, level.seq + 1, ",
        );
        out.push_sql(match self.movement {
            Movement::Reserve => "level.on_hand, level.reserved + wanted.quantity",
            Movement::Release => "level.on_hand, level.reserved - wanted.quantity",
            Movement::Ship => "level.on_hand - wanted.quantity, level.reserved - wanted.quantity",
        });
        out.push_sql(
            " FROM wanted CROSS JOIN LATERAL (SELECT s.seq, s.on_hand, s.reserved FROM stock_levels s \
             WHERE s.sku = wanted.sku ORDER BY s.seq DESC LIMIT 1) level WHERE ",
        );
        out.push_sql(match self.movement {
            Movement::Reserve => "level.on_hand - level.reserved >= wanted.quantity",
            Movement::Release | Movement::Ship => "level.reserved >= wanted.quantity",
        });
        out.push_sql(
            " RETURNING sku), \
             ledger AS (INSERT INTO stock_ledger (order_id, sku, delta, reason, event_id) SELECT ",
        );
        out.push_bind_param::<sql_types::Uuid, _>(&self.order_id)?;
        out.push_sql(match self.movement {
            Movement::Reserve | Movement::Ship => ", moved.sku, -wanted.quantity, ",
            Movement::Release => ", moved.sku, wanted.quantity, ",
        });
        out.push_bind_param::<sql_types::Text, _>(self.movement.reason())?;
        out.push_sql(", ");
        out.push_bind_param::<sql_types::Uuid, _>(&self.cause)?;
        out.push_sql(" FROM moved JOIN wanted ON wanted.sku = moved.sku), complete AS (SELECT count(*) AS lines FROM moved HAVING count(*) = ");
        out.push_bind_param::<sql_types::BigInt, _>(&self.lines)?;
        out.push_sql("), decided AS (");
        match self.decided {
            Decided::First(status) => {
                out.push_sql("INSERT INTO reservations (order_id, status) SELECT ");
                out.push_bind_param::<sql_types::Uuid, _>(&self.order_id)?;
                out.push_sql(", ");
                out.push_bind_param::<sql_types::Text, _>(status.as_str())?;
                out.push_sql(" FROM complete");
            }
            Decided::Now(status) => {
                out.push_sql("UPDATE reservations SET status = ");
                out.push_bind_param::<sql_types::Text, _>(status.as_str())?;
                out.push_sql(", updated_at = now() FROM complete WHERE order_id = ");
                out.push_bind_param::<sql_types::Uuid, _>(&self.order_id)?;
            }
        }
        out.push_sql("), event AS (");
        self.event.push_insert_for_each(&mut out, "complete")?;
        out.push_sql(") SELECT count(*) FROM moved");
        Ok(())
    }
}
