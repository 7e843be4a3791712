//! The order service: takes orders over HTTP, writes each with an `OrderPlaced` event in one
//! transaction (the outbox; the relay publishes it), and applies inventory's answers from
//! `inventory.events` through its inbox, exactly once. Cancellations and shipments go the same
//! way (`OrderCancelled`, `OrderReadyToShip`). Map:
//!
//! - HTTP in: [`routes`] (orders), guarded by [`admission`], taken
//!   for a customer by [`auth`] and answering with [`error`]; [`openapi`] documents them;
//! - the model: [`domain`] (validated requests, statuses), [`repository`] (the transactions),
//!   [`view`] (what a client sees);
//! - events in: [`consumer`] (inventory's decisions → order status);
//! - waiting for an outcome: [`waiters`] (woken by Postgres NOTIFY);
//! - the console: [`console`] (the web page, its latency alert, its views of the other services);
//! - process: [`configuration`], [`state`], [`metrics`], [`startup`].

pub mod admission;
pub mod auth;
pub mod configuration;
pub mod console;
pub mod consumer;
pub mod domain;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod repository;
pub mod routes;
pub mod startup;
pub mod state;
/// The order database's own tables: `diesel print-schema` of `migrations/order`, verbatim (`scripts/check-schema` compares).
#[rustfmt::skip]
pub mod tables;
pub mod view;
pub mod waiters;

/// The order process dies here, after its commit and before its reply: the client's
/// retry must find the committed order.
pub const AFTER_COMMIT_BEFORE_REPLY: &str = "order.after_commit_before_reply";
/// After an inventory decision is applied, before its offset is stored.
pub const CONSUMER_AFTER_COMMIT_BEFORE_ACK: &str = "order.consumer.after_commit_before_ack";

/// The order process dies after committing SHIPPING and `OrderReadyToShip`, before its reply:
/// the operator's retry must find the shipment under way, not start a second.
pub const SHIP_AFTER_COMMIT_BEFORE_REPLY: &str = "order.ship.after_commit_before_reply";

/// The crash points this crate has (see `platform::crash`).
pub const CRASH_POINTS: &[&str] =
    &[AFTER_COMMIT_BEFORE_REPLY, CONSUMER_AFTER_COMMIT_BEFORE_ACK, SHIP_AFTER_COMMIT_BEFORE_REPLY];
