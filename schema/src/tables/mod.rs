//! Diesel definitions of both databases' tables. The files beside this one are
//! `diesel print-schema` output, kept verbatim: `scripts/check-schema` migrates scratch
//! databases and diffs the printed schema against them, so they cannot drift from
//! `migrations/` and `messaging/migrations/`. (Diesel prints no table without a primary key;
//! the partitioned `outbox_log` can have none, so the script prints it from a copy of its
//! columns that has one.)

/// Tables every service database has: the outbox log with its lanes, and the inbox log.
#[rustfmt::skip]
pub mod messaging;

#[rustfmt::skip]
#[path = "order_db.rs"]
mod order_tables;

#[rustfmt::skip]
#[path = "inventory_db.rs"]
mod inventory_tables;

/// The order service's database.
pub mod order_db {
    pub use super::messaging::{inbox_log, outbox_lanes, outbox_log};
    pub use super::order_tables::*;
}

/// The inventory service's database.
pub mod inventory_db {
    pub use super::inventory_tables::*;
    pub use super::messaging::{inbox_log, outbox_lanes, outbox_log};
}
