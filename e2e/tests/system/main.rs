//! System tests: the order, inventory and relay processes together on the real Postgres and
//! the real broker. Each test has its own databases, topics and consumer groups.

mod admin;
mod api;
mod bounded_wait;
mod crash_points;
mod dead_letters;
mod happy_path;
mod health;
mod idempotency;
mod judge;
mod load;
mod redelivery;
mod relay_failover;
mod retention;
