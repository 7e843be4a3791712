//! Diesel definitions of both databases' tables. The files beside this one are
//! `diesel print-schema` output, kept verbatim: `scripts/check-schema` migrates scratch
//! databases and diffs the printed schema against them, so they cannot drift from
//! `migrations/` and `messaging/migrations/`.

/// Tables both databases have: the transactional outbox and the consumer inbox.
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
    pub use super::messaging::{inbox, outbox};
    pub use super::order_tables::*;
}

/// The inventory service's database.
pub mod inventory_db {
    pub use super::inventory_tables::*;
    pub use super::messaging::{inbox, outbox};
}
