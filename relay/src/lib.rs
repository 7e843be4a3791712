//! The relay: moves each service's outbox rows to Kafka, in order, at least once. The
//! process (`main.rs`) runs one [`relay::OutboxRelay`] per configured outbox database:
//!
//! - [`lanes`]: the outbox cut into lanes by order id, each published by one instance at a
//!   time, shared fairly among the live instances through Postgres advisory locks;
//! - [`pipeline`]: several batches in flight, one event per order at a time, only
//!   acknowledged rows deleted, so an order's events reach the topic in order whatever fails;
//! - [`publish`]: the pipeline's ends, the outbox table and the idempotent producer;
//! - [`deleter`]: deletes of published rows, on a session of their own;
//! - [`backlog`]: what waits, for `/health` and the gauges;
//! - [`metrics`], [`settings`].

pub mod backlog;
pub mod deleter;
pub mod lanes;
pub mod metrics;
pub mod pipeline;
pub mod publish;
pub mod relay;
pub mod settings;

/// Between the broker's acknowledgement and the delete: a crash here re-publishes the batch.
pub const AFTER_PUBLISH_BEFORE_DELETE: &str = "relay.after_publish_before_delete";

/// The crash points this crate has (see `platform::crash`).
pub const CRASH_POINTS: &[&str] = &[AFTER_PUBLISH_BEFORE_DELETE];
