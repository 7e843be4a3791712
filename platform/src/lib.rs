//! What every process stands on; nothing here knows about orders or stock.
//!
//! - a process's life: [`service`] (the shared `main`, HTTP server, supervised background
//!   tasks, clean or loud stop), [`readiness`], [`health`], [`shutdown`];
//! - its dependencies: [`db`] (pools, migrations under a lock), [`kafka`] (client factories
//!   that explain every key), [`retry`], [`standby`] (waiting for the synchronous standbys to hold a commit);
//! - the system it belongs to: [`system`] (`system.toml`, every process in one table);
//! - its conventions: [`config`] (defaults, file, environment), [`telemetry`] (JSON logs), [`trace`] (spans exported),
//!   [`metrics`], [`http`] (JSON errors, extractor limits);
//! - who is calling: [`auth`] (customers' signed tokens);
//! - faults on purpose: [`crash`] (named crash points), [`admin`] (token-guarded endpoints).

pub mod admin;
pub mod auth;
pub mod config;
pub mod crash;
pub mod db;
pub mod health;
pub mod http;
pub mod json;
pub mod jwt_crypto;
pub mod kafka;
pub mod metrics;
pub mod readiness;
pub mod retry;
pub mod service;
pub mod shutdown;
pub mod standby;
pub mod system;
pub mod telemetry;
pub mod trace;

/// Every process linking this crate (the services, the relay, the tools, the model checker)
/// allocates with mimalloc rather than glibc's `malloc` (decision 0035): under a drain, glibc
/// spent about 40 % of the relay's CPU in `malloc` and `free`, a quarter of it consolidating
/// its fast bins, and the model checker's threads queued on its arena locks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
