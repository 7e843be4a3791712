//! The gremlin: makes inventory slow on purpose, in a pattern a test can predict.
//!
//! **Rule.** With the gremlin on and pattern `{one_in: N, delay_ms: D}`, an order is slow when
//! `fnv1a64(order id as lower-case hyphenated text) % N == 0`. FNV-1a 64: start at
//! `0xcbf29ce484222325`; for each byte, `hash ^= byte; hash *= 0x100000001b3` (wrapping).
//! A slow order's `OrderPlaced` is held D ms before inventory handles it (other orders are
//! not held up), and so is any `/stock` reply whose path hashes the same way.
//! The rule depends only on the id: not on timing, arrival order or which instance runs it.

use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use tracing::Instrument as _;

use serde::{Deserialize, Serialize};

/// What the gremlin does. `one_in: 4, delay_ms: 5000` delays about a quarter of orders by 5 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Pattern {
    pub enabled: bool,
    /// One order in this many is slow (1 = every order).
    pub one_in: u32,
    pub delay_ms: u64,
}

impl Default for Pattern {
    fn default() -> Self {
        Self { enabled: false, one_in: 4, delay_ms: 5_000 }
    }
}

impl Pattern {
    pub const MAX_DELAY_MS: u64 = 60_000;

    /// Checks a pattern sent by an operator.
    pub fn validate(&self) -> Result<(), String> {
        if self.one_in == 0 {
            return Err("one_in must be at least 1".into());
        }
        if self.delay_ms > Self::MAX_DELAY_MS {
            return Err(format!("delay_ms must be at most {}", Self::MAX_DELAY_MS));
        }
        Ok(())
    }

    /// Whether this pattern makes `key` (an order id, or a request path) slow.
    pub fn is_slow(&self, key: &str) -> bool {
        self.enabled && fnv1a64(key.as_bytes()).is_multiple_of(u64::from(self.one_in))
    }
}

/// The 64-bit FNV-1a hash: simple enough to recompute in any language.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

/// The gremlin of one inventory process: its current pattern and how often it struck.
#[derive(Debug, Default)]
pub struct Gremlin {
    pattern: RwLock<Pattern>,
    counter: prometheus_client::metrics::counter::Counter,
}

impl Gremlin {
    pub fn new(pattern: Pattern) -> Self {
        Self { pattern: RwLock::new(pattern), ..Self::default() }
    }

    /// Counts delays in `metrics` as `gremlin_delays_total`.
    pub fn register(&self, metrics: &platform::metrics::Metrics) {
        metrics.register("gremlin_delays", "Times the gremlin delayed an order or a reply", self.counter.clone());
    }

    pub fn pattern(&self) -> Pattern {
        *self.pattern.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn set(&self, pattern: Pattern) {
        *self.pattern.write().unwrap_or_else(PoisonError::into_inner) = pattern;
        tracing::warn!(?pattern, "gremlin pattern changed");
    }

    /// How many times it delayed something.
    pub fn delays(&self) -> u64 {
        self.counter.get()
    }

    /// Sleeps if `key` is slow under the current pattern.
    pub async fn strike(&self, key: &str) {
        let pattern = self.pattern();
        if pattern.is_slow(key) {
            self.counter.inc();
            tracing::info!(key, delay_ms = pattern.delay_ms, "gremlin delay");
            let span = tracing::info_span!("gremlin.delay", delay_ms = pattern.delay_ms);
            tokio::time::sleep(Duration::from_millis(pattern.delay_ms)).instrument(span).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_the_published_test_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn the_pattern_picks_about_one_in_n_and_always_the_same_ones() {
        let pattern = Pattern { enabled: true, one_in: 4, delay_ms: 1 };
        let ids: Vec<String> = (0..4000).map(|i| format!("01a1ff97-0000-7000-8000-{i:012}")).collect();
        let slow = ids.iter().filter(|id| pattern.is_slow(id)).count();
        assert!((800..1200).contains(&slow), "{slow} of 4000");
        assert!(ids.iter().all(|id| pattern.is_slow(id) == pattern.is_slow(id)));
        assert!(!Pattern { enabled: false, ..pattern }.is_slow(&ids[0]));
    }

    #[test]
    fn nonsense_patterns_are_refused() {
        assert!(Pattern { enabled: true, one_in: 0, delay_ms: 1 }.validate().is_err());
        assert!(Pattern { enabled: true, one_in: 1, delay_ms: 3_600_000 }.validate().is_err());
        assert!(Pattern::default().validate().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_strike_on_a_slow_key_sleeps_for_the_delay_and_is_counted() {
        let gremlin = Gremlin::new(Pattern { enabled: true, one_in: 1, delay_ms: 5_000 });
        let started = tokio::time::Instant::now();
        gremlin.strike("any").await;
        assert_eq!(started.elapsed(), Duration::from_millis(5_000));
        assert_eq!(gremlin.delays(), 1);
    }
}
