//! System tests: the order, inventory and relay processes together on the real Postgres and
//! the real broker. Each test has its own databases, topics and consumer groups.

/// The hostile-event strategies of the reader's property tests, shared.
#[path = "../../../schema/tests/support/hostile.rs"]
mod hostile;

mod admin;
mod alerts;
mod api;
mod batches;
mod bounded_wait;
mod compat;
mod contract;
mod crash_points;
mod customers;
mod db_failover;
mod dead_letters;
mod following;
mod happy_path;
mod health;
mod hostile_http;
mod idempotency;
mod judge;
mod late_commits;
mod load;
mod operator;
mod outbox_reclaim;
mod poison;
mod redelivery;
mod relay_failover;
mod relay_stress;
mod retention;
mod shipping;
mod slow_clients;
mod standby_answers;
mod standby_offsets;
mod standby_wait;
mod status_in_place;
mod stock_levels;
mod strangers;
mod upgrade;
mod wake_ups;
