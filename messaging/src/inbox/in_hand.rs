//! The events this instance holds per partition, so that a partition the group takes away is
//! handed over finished: before librdkafka lets a revoked partition go (and commits its stored
//! offsets), the owner waits, within a bound, for the events it already received from that
//! partition to be applied and their offsets stored.
//!
//! Without the wait the new owner starts from the last committed offset while the old one is
//! still applying the events after it: the new owner reads them again, waits on the row locks
//! the old owner's transaction holds, and its batch gives up (`batch_lock_wait_ms`) before it
//! finds them applied — a few hundred milliseconds for every order on that partition at each
//! join (decision 0027). With it, the new owner starts after them.
//!
//! The count is bounded by the partitions assigned: an entry goes when its count is zero.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::runtime::{Handle, RuntimeFlavor};

#[derive(Default)]
pub(super) struct InHand {
    events: Mutex<HashMap<(String, i32), usize>>,
    changed: Condvar,
}

/// One event in hand, until dropped: once applied and its offset stored, or given up (at
/// shutdown, or by a task that panicked).
pub(super) struct Held {
    in_hand: Arc<InHand>,
    topic: String,
    partition: i32,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.in_hand.leave(&self.topic, self.partition);
    }
}

impl InHand {
    /// An event of `partition` was received; it is in hand until the returned value is dropped.
    pub fn hold(self: &Arc<Self>, topic: &str, partition: i32) -> Held {
        self.enter(topic, partition);
        Held { in_hand: Arc::clone(self), topic: topic.to_owned(), partition }
    }

    fn enter(&self, topic: &str, partition: i32) {
        *self.lock().entry((topic.to_owned(), partition)).or_default() += 1;
    }

    fn leave(&self, topic: &str, partition: i32) {
        let mut events = self.lock();
        let key = (topic.to_owned(), partition);
        if let Some(count) = events.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                events.remove(&key);
            }
        }
        drop(events);
        self.changed.notify_all();
    }

    /// How many events of `partitions` are in hand now.
    pub fn count(&self, partitions: &[(String, i32)]) -> usize {
        let events = self.lock();
        partitions.iter().filter_map(|p| events.get(p)).sum()
    }

    /// Waits until no event of `partitions` is in hand, or `bound` passed; returns how many
    /// still are. Blocking: it is called from librdkafka's rebalance callback, which runs on
    /// the thread that polls the consumer — a runtime worker, whose other tasks (those very
    /// events among them) are first handed to another thread. On a single-threaded runtime
    /// nothing could finish while this thread waits, so it does not wait.
    pub fn wait_for(&self, partitions: &[(String, i32)], bound: Duration) -> usize {
        let wait = || self.block_until_done(partitions, bound);
        match Handle::try_current().map(|runtime| runtime.runtime_flavor()) {
            Ok(RuntimeFlavor::CurrentThread) => self.count(partitions),
            Ok(_) => tokio::task::block_in_place(wait),
            Err(_) => wait(),
        }
    }

    fn block_until_done(&self, partitions: &[(String, i32)], bound: Duration) -> usize {
        let deadline = Instant::now() + bound;
        let mut events = self.lock();
        loop {
            let left: usize = partitions.iter().filter_map(|p| events.get(p)).sum();
            let now = Instant::now();
            if left == 0 || now >= deadline {
                return left;
            }
            events = self.changed.wait_timeout(events, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<(String, i32), usize>> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::InHand;

    fn p(partition: i32) -> Vec<(String, i32)> {
        vec![("t".to_owned(), partition)]
    }

    #[test]
    fn the_wait_ends_when_the_partitions_events_are_done_not_before() {
        let in_hand = Arc::new(InHand::default());
        let (first, second) = (in_hand.hold("t", 0), in_hand.hold("t", 0));
        let _other = in_hand.hold("t", 1);
        let began = Instant::now();
        let worker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(first);
            std::thread::sleep(Duration::from_millis(100));
            drop(second);
        });
        assert_eq!(in_hand.wait_for(&p(0), Duration::from_secs(10)), 0);
        let waited = began.elapsed();
        worker.join().unwrap();
        assert!(waited >= Duration::from_millis(200), "returned after {waited:?}, before the second event was done");
        assert!(waited < Duration::from_secs(5), "waited {waited:?}: past the events' end");
        assert_eq!(in_hand.count(&p(1)), 1, "another partition's events are not touched");
    }

    #[test]
    fn the_wait_is_bounded() {
        let in_hand = Arc::new(InHand::default());
        let _held = in_hand.hold("t", 0);
        let began = Instant::now();
        assert_eq!(in_hand.wait_for(&p(0), Duration::from_millis(150)), 1);
        assert!(began.elapsed() >= Duration::from_millis(150));
    }

    #[test]
    fn a_partition_with_nothing_in_hand_is_let_go_at_once_and_forgotten() {
        let in_hand = Arc::new(InHand::default());
        drop(in_hand.hold("t", 3));
        let began = Instant::now();
        assert_eq!(in_hand.wait_for(&p(3), Duration::from_secs(10)), 0);
        assert!(began.elapsed() < Duration::from_secs(1));
        assert!(in_hand.lock().is_empty(), "no entry kept for a partition with nothing in hand");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_a_runtime_worker_the_events_still_finish_while_it_waits() {
        let in_hand = Arc::new(InHand::default());
        let held = in_hand.hold("t", 0);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(held);
        });
        assert_eq!(in_hand.wait_for(&p(0), Duration::from_secs(10)), 0);
    }
}
