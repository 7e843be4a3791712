//! The inventory service: reserves and releases stock in response to `orders.events`,
//! publishing its decisions on `inventory.events`, and shows stock levels over HTTP.

pub mod configuration;
pub mod consumer;
pub mod gremlin;
pub mod routes;
pub mod startup;
pub mod stock;
