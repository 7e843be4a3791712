//! The notifications service: tells customers by e-mail what became of their orders. It is
//! a consumer added from the outside: it reads `orders.events` and `inventory.events` with
//! a consumer group, a database and an inbox of its own, and nothing in the order or
//! inventory services knows it exists. Map:
//!
//! - events in: [`consumer`] (which event owes which message) → [`store`] (the rows);
//! - e-mail out: [`mail`] (the sender: one message, then its record, per transaction);
//! - HTTP: [`routes`] (what was sent for an order, health), [`auth`] (the customer asking);
//! - process: [`configuration`], [`startup`].
//!
//! What it guarantees (decision 0014): every outcome is mailed at least once, always with
//! the same `Message-ID`, so a crash between sending and recording can repeat a message
//! that the receiving side recognises as the same one.

pub mod auth;
pub mod configuration;
pub mod consumer;
pub mod mail;
pub mod routes;
pub mod startup;
pub mod store;
/// `diesel print-schema` of the migrations, verbatim (scripts/check-schema compares).
#[rustfmt::skip]
pub mod tables;

/// After the SMTP server accepted a message, before it is recorded as sent: the message is
/// sent again after a restart, with the same `Message-ID`.
pub const AFTER_SEND_BEFORE_RECORD: &str = "notifications.after_send_before_record";
/// After an event's inbox transaction committed, before its offset is stored.
pub const AFTER_COMMIT_BEFORE_ACK: &str = "notifications.after_commit_before_ack";

/// The crash points this crate has (see `platform::crash`).
pub const CRASH_POINTS: &[&str] = &[AFTER_SEND_BEFORE_RECORD, AFTER_COMMIT_BEFORE_ACK];
