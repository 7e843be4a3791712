//! The relay: moves each service's outbox rows to Kafka, in order, at least once. The
//! process (`main.rs`) runs one [`relay::OutboxRelay`] per configured outbox database:
//!
//! - [`leader`]: one active relay per outbox, elected by a Postgres advisory lock, others
//!   standing by;
//! - [`publish`]: read in id order, publish with the idempotent producer, delete only what
//!   may go without reordering an order's events;
//! - [`backlog`]: what waits, for `/health` and the gauges;
//! - [`metrics`], [`settings`].

pub mod backlog;
pub mod leader;
pub mod metrics;
pub mod publish;
pub mod relay;
pub mod settings;

/// Between the broker's acknowledgement and the delete: a crash here re-publishes the batch.
pub const AFTER_PUBLISH_BEFORE_DELETE: &str = "relay.after_publish_before_delete";

/// The crash points this crate has (see `platform::crash`).
pub const CRASH_POINTS: &[&str] = &[AFTER_PUBLISH_BEFORE_DELETE];
