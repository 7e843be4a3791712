//! The order service: takes orders over HTTP, writes them with an `OrderPlaced` event in one
//! transaction, and applies inventory's decisions from `inventory.events`.

pub mod admission;
pub mod configuration;
pub mod consumer;
pub mod domain;
pub mod error;
pub mod latency;
pub mod metrics;
pub mod openapi;
pub mod repository;
pub mod routes;
pub mod startup;
pub mod view;
pub mod waiters;
