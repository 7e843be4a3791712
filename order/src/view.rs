//! What the API returns for an order.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::{OrderStatus, Step};

/// An order as clients see it: its lines and every status it has been in.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrderView {
    pub id: Uuid,
    pub customer_id: String,
    pub status: OrderStatus,
    /// What can happen next in this status: clients (the web page) take it from here rather
    /// than repeating the service's rules.
    pub next: Next,
    /// Why inventory refused the order, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejection_reason: Option<String>,
    pub correlation_id: String,
    pub lines: Vec<LineView>,
    /// Oldest first.
    pub history: Vec<HistoryEntry>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What can happen next to an order, by its status (`OrderStatus::after`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct Next {
    /// An answer from inventory is awaited: the status moves without anyone acting.
    pub awaiting_inventory: bool,
    /// `POST /orders/{id}/cancel` would be accepted.
    pub cancel: bool,
    /// `POST /orders/{id}/ship` would be accepted (with a token that grants `orders:ship`).
    pub ship: bool,
}

impl From<OrderStatus> for Next {
    fn from(status: OrderStatus) -> Self {
        Self {
            awaiting_inventory: !status.is_settled(),
            cancel: status.after(Step::CancelRequested).is_some(),
            ship: status.after(Step::ShipRequested).is_some(),
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LineView {
    pub sku: String,
    pub quantity: i32,
}

/// One status change.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HistoryEntry {
    pub status: OrderStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::Next;
    use crate::domain::OrderStatus;

    #[test]
    fn what_can_happen_next_follows_the_statuses() {
        let next = |status| {
            let Next { awaiting_inventory, cancel, ship } = Next::from(status);
            (awaiting_inventory, cancel, ship)
        };
        assert_eq!(next(OrderStatus::Pending), (true, true, false));
        assert_eq!(next(OrderStatus::Confirmed), (false, true, true));
        assert_eq!(next(OrderStatus::Cancelling), (true, false, false));
        assert_eq!(next(OrderStatus::Shipping), (true, false, false));
        for settled in [OrderStatus::Rejected, OrderStatus::Cancelled, OrderStatus::Shipped] {
            assert_eq!(next(settled), (false, false, false), "{settled}");
        }
    }
}
