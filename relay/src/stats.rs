//! Counters the consumer and the relay keep while they run, for tests, health and metrics.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// What an inbox consumer did with the events it received.
#[derive(Debug, Default)]
pub struct ConsumerStats {
    pub processed: AtomicU64,
    pub duplicates: AtomicU64,
    pub failed: AtomicU64,
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
}

/// What one outbox relay did.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Whether this instance holds the outbox's leader lock right now.
    pub active: AtomicBool,
    pub published: AtomicU64,
    pub batches: AtomicU64,
}

impl RelayStats {
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }
}
