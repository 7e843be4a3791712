//! The inventory service: reserves stock for `OrderPlaced`, releases it for `OrderCancelled`
//! and takes it out of the warehouse for `OrderReadyToShip`, each applied exactly once
//! through its inbox, and publishes its answers on `inventory.events` through its outbox. Map:
//!
//! - events in: [`consumer`] (which event does what) → [`stock`] (the transactions);
//! - HTTP: [`routes`] (stock levels, health, admin: products and the gremlin), answering
//!   with [`error`];
//! - faults on purpose: [`gremlin`] (a deterministic slowness pattern);
//! - process: [`configuration`], [`state`], [`startup`].

pub mod configuration;
pub mod consumer;
pub mod error;
pub mod gremlin;
pub mod routes;
pub mod startup;
pub mod state;
pub mod stock;
/// The inventory database's own tables: `diesel print-schema` of `migrations/inventory`, verbatim (`scripts/check-schema` compares).
#[rustfmt::skip]
pub mod tables;
pub mod views;

/// Inside the inbox transaction, after the stock changed, before the commit.
pub const BEFORE_COMMIT: &str = "inventory.before_commit";
/// After the commit, before the offset is stored: the event is redelivered.
pub const AFTER_COMMIT_BEFORE_ACK: &str = "inventory.after_commit_before_ack";

/// Shipping an order: inside the inbox transaction, after the stock left `on_hand` and
/// `reserved`, before the commit.
pub const SHIP_BEFORE_COMMIT: &str = "inventory.ship.before_commit";
/// Shipping an order: after the commit, before the offset is stored and before the relay has
/// published `InventoryShipped`.
pub const SHIP_AFTER_COMMIT_BEFORE_ACK: &str = "inventory.ship.after_commit_before_ack";

/// The crash points this crate has (see `platform::crash`).
pub const CRASH_POINTS: &[&str] =
    &[BEFORE_COMMIT, AFTER_COMMIT_BEFORE_ACK, SHIP_BEFORE_COMMIT, SHIP_AFTER_COMMIT_BEFORE_ACK];
