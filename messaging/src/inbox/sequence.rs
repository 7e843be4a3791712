//! Per-order sequencing: events are handled concurrently, except that the events of one order
//! (one Kafka key) are handled one after the other, in partition order; and offsets are
//! stored only up to the oldest unfinished event of each partition.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rdkafka::Message as _;
use rdkafka::message::OwnedMessage;
use tokio::sync::oneshot;

use crate::offsets::OffsetTracker;

/// Per order key: which task is the latest of its chain (by generation), and the signal it
/// gives when done, which the next event of the same order awaits.
type ChainLink = (u64, oneshot::Receiver<()>);

#[derive(Default)]
pub(super) struct Sequencer {
    offsets: Mutex<OffsetTracker>,
    chains: Mutex<HashMap<Vec<u8>, ChainLink>>,
    generation: AtomicU64,
}

/// What a received event waits for before it starts, and the signal it gives when done.
pub(super) struct Turn {
    pub previous: Option<oneshot::Receiver<()>>,
    pub done: oneshot::Sender<()>,
    generation: u64,
}

impl Sequencer {
    /// Registers `message` as the latest event of its order.
    pub fn begin(&self, message: &OwnedMessage) -> Turn {
        lock(&self.offsets).begin(message.topic(), message.partition(), message.offset());
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let (done, finished) = oneshot::channel();
        let key = message.key().unwrap_or_default().to_vec();
        let previous = lock(&self.chains).insert(key, (generation, finished)).map(|(_, rx)| rx);
        Turn { previous, done, generation }
    }

    /// Forgets the order's chain if no later event joined it. If the event is `settled`,
    /// returns the offset that may now be stored for its partition, if it moved. An
    /// unsettled event (shutdown came first) keeps its partition's offset from moving past
    /// it, so it is redelivered after a restart.
    pub fn end(&self, message: &OwnedMessage, turn: Turn, settled: bool) -> Option<i64> {
        let key = message.key().unwrap_or_default();
        let mut chains = lock(&self.chains);
        if chains.get(key).is_some_and(|(g, _)| *g == turn.generation) {
            chains.remove(key);
        }
        drop(chains);
        drop(turn.done);
        if !settled {
            return None;
        }
        lock(&self.offsets).finish(message.topic(), message.partition(), message.offset())
    }
}

/// A poisoned lock only means another task panicked mid-update of plain bookkeeping; the
/// data is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
