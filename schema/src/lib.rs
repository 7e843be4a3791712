//! The contracts between the services, in one place so that a change to any of them is a
//! change to this crate: the event envelope and payloads, the topics they travel on, and the
//! validated value types they carry. A service's tables are its own and live beside its
//! migrations (`order/src/tables.rs`, `inventory/src/tables.rs`, `messaging/src/tables.rs`).
//!
//! Nothing in here talks to a network or a database; it only describes shapes.

pub mod envelope;
pub mod events;
pub mod ids;
pub mod topics;

pub use envelope::{Envelope, Event, RawEnvelope};
pub use ids::{EventId, OrderId, Quantity, Sku};
