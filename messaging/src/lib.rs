//! Transactional messaging, the library every service links; it knows nothing of orders.
//!
//! - [`outbox`]: write an event in the same transaction as the state change it describes
//!   (the relay process publishes it later);
//! - [`inbox`]: consume a topic and apply each event exactly once per database, in per-order
//!   sequence, retrying what may pass and dead-lettering what never will;
//! - [`offsets`]: which offset may be committed while events finish out of order;
//! - [`dead_letter`]: the `<topic>.dlq` topics, and listing and redriving what is on them;
//! - [`control`]: an operator pauses, resumes and replays a consumer (admin routes);
//! - [`service`]: the skeleton of a consuming service (settings, pools, consumer, `/health`,
//!   supervision), so that a service is its handler and its routes;
//! - [`MIGRATIONS`]: the `outbox` and `inbox` tables, applied to each service's database
//!   before the service's own migrations.

use diesel_migrations::{EmbeddedMigrations, embed_migrations};

pub mod control;
pub mod dead_letter;
pub mod inbox;
pub mod metrics;
pub mod offsets;
pub mod outbox;
pub mod service;
pub mod settings;
/// The tables every service database has (the outbox log, its lanes and relays, the inbox
/// log): `diesel print-schema` of `messaging/migrations`, verbatim (`scripts/check-schema`
/// compares; diesel prints no table without a primary key, so it prints `outbox_log` from a
/// keyed copy of its columns).
#[rustfmt::skip]
pub mod tables;

/// The messaging tables, which every service's database has.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// The crash points this crate has (see `platform::crash`).
pub const CRASH_POINTS: &[&str] = &[inbox::CONSUME_LOOP_POINT, inbox::FATAL_ERROR_POINT];
