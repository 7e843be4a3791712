//! Which events are failing right now, and since when. Offsets never move past an unfinished
//! event, so a partition's oldest failing event holds the whole partition: once it has been
//! failing longer than the bound, the partition is stuck, and `/health` (not ready, naming
//! the partition and the reason) and `consumer_stalled_seconds` say so.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::handler::Coordinates;

/// The events failing now, shared between the consumer's tasks and its service's `/health`.
#[derive(Debug)]
pub struct Stalls {
    failing: Mutex<HashMap<(String, i32, i64), Record>>,
    bound: Duration,
}

/// When an event first failed, and its latest reason.
#[derive(Debug)]
struct Record {
    since: Instant,
    reason: String,
}

/// One event's failures being recorded; see [`Stalls::failing`].
pub(super) struct Failing<'a> {
    stalls: &'a Stalls,
    key: (String, i32, i64),
}

impl Failing<'_> {
    /// The event failed (again) for `reason`; the first failure's time is kept.
    pub(super) fn again(&self, reason: &str) {
        if let Some(failing) = self.stalls.lock().get_mut(&self.key) {
            failing.reason = reason.chars().take(REASON_LEN).collect();
        }
    }
}

impl Drop for Failing<'_> {
    fn drop(&mut self) {
        self.stalls.lock().remove(&self.key);
    }
}

/// A partition's oldest failing event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub failing_for: Duration,
    pub reason: String,
}

/// How much of a failure's text `/health` repeats.
const REASON_LEN: usize = 200;

impl Stalls {
    /// A partition is stuck once its oldest failing event has failed for `bound`.
    pub fn new(bound: Duration) -> Self {
        Self { failing: Mutex::default(), bound }
    }

    /// Starts recording the failures of the event at `from`; the record goes when the
    /// returned guard is dropped (the event applied, dead-lettered or left for redelivery).
    /// Taken at the first failure only, so an event that succeeds at once costs nothing here.
    pub(super) fn failing(&self, from: &Coordinates) -> Failing<'_> {
        let key = (from.topic.clone(), from.partition, from.offset);
        self.lock().insert(key.clone(), Record { since: Instant::now(), reason: String::new() });
        Failing { stalls: self, key }
    }

    /// Per partition with a failing event, the oldest one.
    pub fn oldest(&self) -> Vec<Stall> {
        let now = Instant::now();
        let mut oldest: HashMap<(&str, i32), Stall> = HashMap::new();
        let failing = self.lock();
        for ((topic, partition, offset), failure) in failing.iter() {
            let stall = Stall {
                topic: topic.clone(),
                partition: *partition,
                offset: *offset,
                failing_for: now.duration_since(failure.since),
                reason: failure.reason.clone(),
            };
            oldest
                .entry((topic.as_str(), *partition))
                .and_modify(|held| {
                    if stall.offset < held.offset {
                        *held = stall.clone();
                    }
                })
                .or_insert(stall);
        }
        let mut stalls: Vec<Stall> = oldest.into_values().collect();
        stalls.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        stalls
    }

    /// The partitions whose oldest failing event has failed for longer than the bound.
    pub fn stuck(&self) -> Vec<Stall> {
        self.oldest().into_iter().filter(|s| s.failing_for >= self.bound).collect()
    }

    /// The `/health` check: down while any partition is stuck.
    pub fn check(&self) -> platform::health::Check {
        const NAME: &str = "consumer progress";
        let stuck = self.stuck();
        if stuck.is_empty() {
            return platform::health::Check::up(NAME);
        }
        let problem = stuck
            .iter()
            .map(|s| {
                format!(
                    "{}[{}] offset {} failing for {} s: {}",
                    s.topic,
                    s.partition,
                    s.offset,
                    s.failing_for.as_secs(),
                    s.reason
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        platform::health::Check::down(NAME, problem)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<(String, i32, i64), Record>> {
        self.failing.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Stalls;
    use crate::inbox::handler::Coordinates;

    fn at(partition: i32, offset: i64) -> Coordinates {
        Coordinates { topic: "orders.events".into(), partition, offset }
    }

    #[test]
    fn a_partition_is_stuck_while_its_oldest_event_fails_past_the_bound() {
        let stalls = Stalls::new(Duration::from_millis(50));
        let first = stalls.failing(&at(2, 7));
        first.again("first reason");
        let later = stalls.failing(&at(2, 9));
        later.again("later event");
        assert!(stalls.check().is_up(), "not yet past the bound");
        std::thread::sleep(Duration::from_millis(60));
        first.again("deadlock detected");
        let stuck = stalls.stuck();
        assert_eq!(stuck.len(), 1, "one partition: {stuck:?}");
        assert_eq!((stuck[0].partition, stuck[0].offset), (2, 7), "the oldest failing event");
        assert_eq!(stuck[0].reason, "deadlock detected", "the latest reason");
        assert!(stuck[0].failing_for >= Duration::from_millis(50), "since the first failure");
        let check = stalls.check();
        assert!(!check.is_up());
        assert!(format!("{check:?}").contains("orders.events[2] offset 7"), "{check:?}");

        drop(first);
        assert_eq!(stalls.oldest()[0].offset, 9, "the next failing event is the partition's oldest");
        drop(later);
        assert!(stalls.oldest().is_empty());
        assert!(stalls.check().is_up());
    }
}
