//! HTTP routes of the order service, one module per resource (`/health` is the skeleton's:
//! `messaging::service::health`).

pub mod orders;
pub mod trace;
