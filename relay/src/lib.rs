//! Transactional messaging, used by every service:
//! - [`outbox`]: write an event in the same transaction as the state change it describes;
//! - [`publisher`]: the relay that moves outbox rows to Kafka (leader-locked, ordered);
//! - [`inbox`]: the consume loop that applies each event exactly once per database.

pub mod dead_letter;
pub mod inbox;
pub mod metrics;
pub mod offsets;
pub mod outbox;
pub mod publisher;
pub mod stats;
