//! The relay: moves each service's outbox rows to Kafka, in order, at least once. The
//! process ([`process`]) runs one [`relay::OutboxRelay`] per configured outbox database:
//!
//! - [`window`]: the position rule: windows between snapshots, read in id order after a floor;
//! - [`lanes`]: the outbox cut into lanes by order id, each published by one instance at a
//!   time under a lease with an epoch, shared fairly among the live instances;
//! - [`pipeline`]: several batches in flight, one event per order at a time, a lane's
//!   position moved only over acknowledged rows;
//! - [`publish`]: the pipeline's ends, the outbox log and the idempotent producer;
//! - [`reclaim`]: the log's published partitions given back, never waiting for a lock, by
//!   [`housekeeping`], the relay's second session;
//! - [`standby`]: rows published only once the synchronous standbys hold them (decision 0030);
//! - [`wake`]: notifications from writers only while the relay sleeps;
//! - [`backlog`]: what waits, for `/health` and the gauges;
//! - [`hops`]: the relay's spans in an order's trace;
//! - [`metrics`], [`settings`].

pub mod backlog;
pub mod hops;
pub mod housekeeping;
pub mod lanes;
pub mod metrics;
pub mod pipeline;
pub mod process;
pub mod publish;
pub mod reclaim;
pub mod relay;
pub mod settings;
pub mod standby;
pub mod wake;
pub mod window;

/// Between the broker's acknowledgement and the write of the lane's position: a crash here
/// publishes the batch again.
pub const AFTER_PUBLISH_BEFORE_POSITION: &str = "relay.after_publish_before_position";

/// The crash points this crate has (see `platform::crash`).
pub const CRASH_POINTS: &[&str] = &[AFTER_PUBLISH_BEFORE_POSITION];
