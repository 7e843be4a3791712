//! Which offset of a partition may be committed when messages finish out of order.
//!
//! Messages of one partition are handled concurrently (different orders do not wait for each
//! other), so message 7 may finish before message 5. The committed position must never pass
//! an unfinished message, or a crash would skip it: the safe position is just below the
//! lowest offset still in flight.

use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Default)]
struct Partition {
    in_flight: BTreeSet<i64>,
    highest_done: Option<i64>,
    stored: Option<i64>,
}

/// Tracks in-flight offsets per (topic, partition).
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<(String, i32), Partition>,
}

impl OffsetTracker {
    pub fn begin(&mut self, topic: &str, partition: i32, offset: i64) {
        self.partitions.entry((topic.to_owned(), partition)).or_default().in_flight.insert(offset);
    }

    /// Marks `offset` finished. Returns the offset to store (the last one such that it and
    /// every offset before it are finished), if that moved forward.
    pub fn finish(&mut self, topic: &str, partition: i32, offset: i64) -> Option<i64> {
        let state = self.partitions.get_mut(&(topic.to_owned(), partition))?;
        state.in_flight.remove(&offset);
        state.highest_done = state.highest_done.max(Some(offset));
        let safe = match state.in_flight.first() {
            Some(&lowest) => lowest - 1,
            None => state.highest_done?,
        };
        (state.stored < Some(safe) && safe >= 0).then(|| {
            state.stored = Some(safe);
            safe
        })
    }

    pub fn in_flight(&self) -> usize {
        self.partitions.values().map(|p| p.in_flight.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::OffsetTracker;

    #[test]
    fn the_stored_offset_never_passes_an_unfinished_message() {
        let mut t = OffsetTracker::default();
        for offset in [5, 6, 7] {
            t.begin("t", 0, offset);
        }
        assert_eq!(t.finish("t", 0, 7), Some(4), "5 and 6 are unfinished; only 4 and before are safe");
        assert_eq!(t.finish("t", 0, 6), None, "5 is still unfinished");
        assert_eq!(t.finish("t", 0, 5), Some(7), "all done");
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn partitions_are_tracked_independently() {
        let mut t = OffsetTracker::default();
        t.begin("t", 0, 10);
        t.begin("t", 1, 3);
        assert_eq!(t.finish("t", 1, 3), Some(3));
        assert_eq!(t.finish("t", 0, 10), Some(10));
    }

    #[test]
    fn an_unknown_partition_or_offset_stores_nothing() {
        let mut t = OffsetTracker::default();
        assert_eq!(t.finish("t", 0, 1), None);
    }
}
