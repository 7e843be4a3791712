//! Topic names. Production uses the defaults; tests give every run its own names so that
//! runs never see each other's events.

/// Where the order service publishes `OrderPlaced`, `OrderCancelled` and `OrderReadyToShip`.
pub const ORDERS: &str = "orders.events";
/// Where the inventory service publishes its answers: `InventoryReserved`, `InventoryRejected`,
/// `InventoryReleased`, `InventoryShipped` and `InventoryRefused`.
pub const INVENTORY: &str = "inventory.events";

/// The pair of topic names a deployment uses.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct Topics {
    pub orders: String,
    pub inventory: String,
}

impl Default for Topics {
    fn default() -> Self {
        Self { orders: ORDERS.to_owned(), inventory: INVENTORY.to_owned() }
    }
}

/// What a consumer's dead-letter topics end with.
pub const DEAD_LETTER_SUFFIX: &str = ".dlq";

/// Where consumers of `topic` put the events they can never apply.
pub fn dead_letter(topic: &str) -> String {
    format!("{topic}{DEAD_LETTER_SUFFIX}")
}
