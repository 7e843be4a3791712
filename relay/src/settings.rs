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
    /// Batches in flight at once: the next is read and sent while the broker acknowledges
    /// the previous ones (`crate::pipeline`). 1 waits for each batch before reading the next.
    pub pipeline_depth: usize,
    /// How often a relay looks at the other instances and takes free lanes (a dead
    /// instance's lanes are taken over this fast).
    pub standby_retry_ms: u64,
    /// How many lanes the outbox is cut into (`crate::lanes`): up to this many instances
    /// publish it at once. Every instance of one outbox must use the same count.
    pub lanes: i32,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            poll_interval_ms: 1_000,
            listen: true,
            batch_size: 500,
            pipeline_depth: 4,
            standby_retry_ms: 1_000,
            lanes: 8,
        }
    }
}
