//! HTTP routes of the order service, one module per resource.

pub mod health;
pub mod orders;
pub mod page;
pub mod trace;
