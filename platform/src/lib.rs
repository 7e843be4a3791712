//! What every process stands on: layered configuration, JSON telemetry, Postgres pools and
//! migrations, Kafka client factories, and the shutdown signal. Nothing here knows about
//! orders or stock.

pub mod admin;
pub mod config;
pub mod crash;
pub mod db;
pub mod health;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod readiness;
pub mod retry;
pub mod service;
pub mod shutdown;
pub mod telemetry;
