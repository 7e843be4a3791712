//! Counters the consumer and the relay keep while they run, for tests, health and metrics.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

/// What an inbox consumer did with the events it received.
#[derive(Debug, Default)]
pub struct ConsumerStats {
    pub processed: AtomicU64,
    pub duplicates: AtomicU64,
    /// Events that could not be applied (each is then dead-lettered, or retried after a
    /// restart if shutdown came first).
    pub failed: AtomicU64,
    /// Events published to the dead-letter topic.
    pub dead_lettered: AtomicU64,
}

impl ConsumerStats {
    pub fn processed(&self) -> u64 {
        self.processed.load(Ordering::Relaxed)
    }
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
    pub fn dead_lettered(&self) -> u64 {
        self.dead_lettered.load(Ordering::Relaxed)
    }
}

/// What one outbox relay did.
#[derive(Debug)]
pub struct RelayStats {
    /// Whether this instance holds the outbox's leader lock right now.
    pub active: AtomicBool,
    pub published: AtomicU64,
    pub batches: AtomicU64,
    /// Outbox rows waiting, and the age of the oldest in milliseconds (as last measured by the
    /// active relay; -1 until then).
    pub backlog_rows: AtomicI64,
    pub backlog_oldest_ms: AtomicI64,
}

impl RelayStats {
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// (rows, oldest age in seconds), if measured.
    pub fn backlog(&self) -> Option<(i64, f64)> {
        let rows = self.backlog_rows.load(Ordering::Relaxed);
        (rows >= 0).then(|| (rows, self.backlog_oldest_ms.load(Ordering::Relaxed) as f64 / 1e3))
    }
}

impl Default for RelayStats {
    fn default() -> Self {
        Self {
            active: AtomicBool::new(false),
            published: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            backlog_rows: AtomicI64::new(-1),
            backlog_oldest_ms: AtomicI64::new(0),
        }
    }
}
