//! `RELAY__RELAY__*`: how a relay behaves.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RelaySettings {
    /// Fallback poll when no notification arrives (a lost NOTIFY, a restarted listener).
    pub poll_interval_ms: u64,
    /// Whether to LISTEN at all; off measures pure polling (see the benchmarks).
    pub listen: bool,
    /// Rows read, published and deleted at a time.
    pub batch_size: i64,
    /// How often a standby relay tries to take the leader lock.
    pub standby_retry_ms: u64,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self { poll_interval_ms: 1_000, listen: true, batch_size: 500, standby_retry_ms: 1_000 }
    }
}
