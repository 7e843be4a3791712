//! Several batches in flight: the relay reads and sends the next batch while the broker
//! acknowledges the previous ones, and settles (deletes) batches in the order it sent them.
//!
//! Two rules keep an order's events in order on the topic, whatever fails:
//!
//! - **One event per order in flight.** A row is sent only when no earlier row of its order
//!   is waiting for its acknowledgement. The idempotent producer keeps the order of messages
//!   that succeed, but a message that fails (a delivery timeout while the broker is away)
//!   leaves a gap that later messages of the same partition would fill first. Holding an
//!   order's next event until the previous one is acknowledged means no event ever reaches
//!   the topic ahead of an earlier event of its order, including ahead of a retry.
//! - **Read the oldest rows that are not in flight**, not "the rows after the last one read".
//!   Outbox ids are drawn before commit, so a transaction may commit a lower id after a
//!   higher one was read; reading by position would skip it. A failed row stays in the
//!   outbox, is not in flight any more, and so comes first in the next read, ahead of every
//!   later event of its order.
//!
//! Only acknowledged rows are deleted, batch by batch in sending order; a crash between an
//! acknowledgement and the delete re-publishes, and consumers deduplicate by event id. The
//! delete may run elsewhere while the next batches are read and sent (the relay gives it a
//! session of its own): a batch taken with [`Pipeline::take_oldest`] keeps its acknowledged
//! rows out of reads until [`Pipeline::deleted`] says they are gone, so a row is never read
//! again while its delete is on the way.
//!
//! The pipeline is written against [`Store`] and [`Sink`] so that its rules can be tested
//! with deliveries that fail or arrive late on purpose (see the tests below); the relay
//! plugs in the outbox table and the Kafka producer.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use futures::future::{BoxFuture, MaybeDone, maybe_done};
use rdkafka::error::KafkaError;

use crate::publish::Outgoing;

/// Where the rows come from and go when they are done: the outbox table.
pub trait Store {
    type Error;
    /// The oldest `limit` rows, in id order, leaving out the ids in `excluding`.
    fn fetch(&mut self, excluding: &[i64], limit: i64) -> impl Future<Output = Result<Vec<Outgoing>, Self::Error>>;
    /// Deletes exactly the given rows; returns how many it deleted.
    fn delete(&mut self, ids: &[i64]) -> impl Future<Output = Result<usize, Self::Error>>;
}

/// Where the rows are published: the broker. The returned future resolves with the
/// delivery's outcome; sending itself must not wait for it.
pub trait Sink {
    fn send(&self, row: &Outgoing) -> BoxFuture<'static, Result<(), KafkaError>>;
}

/// Every delivery's outcome, in sending order, and how long it took from the send until the
/// last of them was seen.
type Answers = (Vec<Result<(), KafkaError>>, Duration);

/// A batch whose deliveries are under way.
struct Batch {
    rows: Vec<Outgoing>,
    /// Kept when done, so that waiting for it ([`Pipeline::wait_for_oldest`]) can be given up
    /// and resumed without losing the outcome.
    deliveries: MaybeDone<BoxFuture<'static, Answers>>,
}

/// The oldest batch, all its deliveries answered, taken out of the pipeline
/// ([`Pipeline::take_oldest`]). Its acknowledged rows are to be deleted.
#[derive(Debug)]
pub struct Answered {
    /// The batch's rows, in the order they were sent.
    pub rows: Vec<Outgoing>,
    /// For each row, whether the broker acknowledged it.
    pub acknowledged: Vec<bool>,
    /// From the send until every answer was seen.
    pub delivered_in: Duration,
}

impl Answered {
    /// The rows the broker acknowledged, in sending order.
    pub fn acknowledged_rows(&self) -> impl Iterator<Item = &Outgoing> {
        self.rows.iter().zip(&self.acknowledged).filter(|(_, ok)| **ok).map(|(row, _)| row)
    }

    /// The rows to delete: the acknowledged ones.
    pub fn acknowledged_ids(&self) -> Vec<i64> {
        self.acknowledged_rows().map(|row| row.id).collect()
    }

    pub fn failures(&self) -> usize {
        self.acknowledged.iter().filter(|ok| !**ok).count()
    }
}

/// What became of one batch once all its deliveries were answered.
#[derive(Debug)]
pub struct Settled {
    pub answered: Answered,
    /// How many rows the delete removed.
    pub deleted: usize,
}

/// The relay's batches in flight, for one outbox session.
pub struct Pipeline {
    depth: usize,
    batch_size: i64,
    in_flight: VecDeque<Batch>,
    /// Message keys (order ids) with a row in flight.
    keys: HashSet<String>,
    /// The last read stopped at a row whose order has an earlier row in flight: read again
    /// only after a batch has settled.
    held: bool,
    /// Acknowledged rows whose delete is under way, batch by batch: left out of reads.
    deleting: VecDeque<Vec<i64>>,
    /// The last read came back short and held nothing back, and no delivery has failed
    /// since: every row committed before it is in flight or deleted.
    caught_up: bool,
}

impl Pipeline {
    /// Up to `depth` batches of `batch_size` rows in flight at a time.
    pub fn new(depth: usize, batch_size: i64) -> Self {
        Self {
            depth: depth.max(1),
            batch_size: batch_size.max(1),
            in_flight: VecDeque::new(),
            keys: HashSet::new(),
            held: false,
            deleting: VecDeque::new(),
            caught_up: false,
        }
    }

    /// Whether another read would find only rows committed since the last one. A relay
    /// that LISTENs learns of those from a notification, and need not read until then.
    pub fn caught_up(&self) -> bool {
        self.caught_up
    }

    /// New rows may be there (a notification, a poll, lanes taken over): read again.
    pub fn look_again(&mut self) {
        self.caught_up = false;
    }

    /// Whether any batch is waiting for acknowledgements.
    pub fn is_idle(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// Whether another read could add a batch now.
    pub fn has_room(&self) -> bool {
        self.in_flight.len() < self.depth && !self.held
    }

    /// Reads and sends batches until `depth` are in flight, the outbox has nothing more, or
    /// a row must wait for an earlier row of its order. Returns how many rows it sent.
    pub async fn fill<S: Store>(&mut self, store: &mut S, sink: &impl Sink) -> Result<usize, S::Error> {
        let mut sent = 0;
        while self.has_room() {
            let excluding: Vec<i64> = self
                .in_flight
                .iter()
                .flat_map(|b| b.rows.iter().map(|r| r.id))
                .chain(self.deleting.iter().flatten().copied())
                .collect();
            let rows = store.fetch(&excluding, self.batch_size).await?;
            let more_waiting = rows.len() as i64 >= self.batch_size;
            let rows = self.admit(rows);
            self.caught_up = !more_waiting && !self.held;
            if rows.is_empty() {
                break;
            }
            sent += rows.len();
            let sent_at = Instant::now();
            let deliveries = futures::future::join_all(rows.iter().map(|row| sink.send(row)).collect::<Vec<_>>())
                .map(move |answers| (answers, sent_at.elapsed()));
            self.in_flight.push_back(Batch { rows, deliveries: maybe_done(deliveries.boxed()) });
            if !more_waiting {
                break;
            }
        }
        Ok(sent)
    }

    /// The longest prefix of `rows` (in id order) whose orders have nothing in flight, each
    /// order at most once; marks their orders as in flight.
    fn admit(&mut self, rows: Vec<Outgoing>) -> Vec<Outgoing> {
        let mut admitted = Vec::with_capacity(rows.len());
        for row in rows {
            if !self.keys.insert(row.message_key.clone()) {
                self.held = true;
                break;
            }
            admitted.push(row);
        }
        admitted
    }

    /// Resolves when every delivery of the oldest batch has been answered (at once when
    /// nothing is in flight). Safe to give up and call again.
    pub async fn wait_for_oldest(&mut self) {
        if let Some(batch) = self.in_flight.front_mut() {
            (&mut batch.deliveries).await;
        }
    }

    /// Waits for the oldest batch's deliveries and takes it out of the pipeline, releasing
    /// its orders: an order's next event may be sent once the previous one is acknowledged.
    /// Its acknowledged rows stay out of reads until [`Pipeline::deleted`] is told they are
    /// gone. `None` when nothing is in flight.
    pub async fn take_oldest(&mut self) -> Option<Answered> {
        self.wait_for_oldest().await;
        let mut batch = self.in_flight.pop_front()?;
        let (results, delivered_in) = std::pin::Pin::new(&mut batch.deliveries)
            .take_output()
            .unwrap_or_else(|| (batch.rows.iter().map(|_| Err(KafkaError::Canceled)).collect(), Duration::ZERO));
        for (row, result) in batch.rows.iter().zip(&results) {
            if let Err(error) = result {
                tracing::warn!(event_id = %row.event_id, topic = %row.topic, %error, "event not acknowledged");
            }
        }
        for row in &batch.rows {
            self.keys.remove(&row.message_key);
        }
        self.held = false;
        let answered =
            Answered { acknowledged: results.iter().map(Result::is_ok).collect(), rows: batch.rows, delivered_in };
        // A row that was not acknowledged stays in the outbox, to be read again.
        self.caught_up &= answered.failures() == 0;
        self.deleting.push_back(answered.acknowledged_ids());
        Some(answered)
    }

    /// The oldest taken batch's delete is done (committed, or given up with the session):
    /// its rows may be read again if they are still there.
    pub fn deleted(&mut self) {
        self.deleting.pop_front();
    }

    /// [`Pipeline::take_oldest`] and the delete, on one store. `before_delete` runs between
    /// the last acknowledgement and the delete (the relay's crash point).
    pub async fn settle_oldest<S: Store, E: From<S::Error>>(
        &mut self,
        store: &mut S,
        before_delete: impl FnOnce(&[Outgoing], &[bool]) -> Result<(), E>,
    ) -> Option<Result<Settled, E>> {
        let answered = self.take_oldest().await?;
        let deleted = match before_delete(&answered.rows, &answered.acknowledged) {
            Ok(()) => store.delete(&answered.acknowledged_ids()).await.map_err(E::from),
            Err(error) => Err(error),
        };
        self.deleted();
        Some(deleted.map(|deleted| Settled { answered, deleted }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use futures::FutureExt as _;

    use super::*;

    /// An outbox in memory. Rows become visible by "commit" in any id order, as they do in
    /// Postgres when transactions commit out of the order they drew their ids.
    #[derive(Default)]
    struct MemoryStore {
        rows: BTreeMap<i64, Outgoing>,
        deleted: Vec<i64>,
    }

    impl MemoryStore {
        fn commit(&mut self, id: i64, order: &str, seq: u32) {
            self.rows.insert(id, row(id, order, seq));
        }
    }

    impl Store for MemoryStore {
        type Error = String;
        async fn fetch(&mut self, excluding: &[i64], limit: i64) -> Result<Vec<Outgoing>, String> {
            Ok(self.rows.values().filter(|r| !excluding.contains(&r.id)).take(limit as usize).cloned().collect())
        }
        async fn delete(&mut self, ids: &[i64]) -> Result<usize, String> {
            let mut deleted = 0;
            for id in ids {
                if self.rows.remove(id).is_some() {
                    self.deleted.push(*id);
                    deleted += 1;
                }
            }
            Ok(deleted)
        }
    }

    fn row(id: i64, order: &str, seq: u32) -> Outgoing {
        Outgoing {
            id,
            event_id: uuid::Uuid::now_v7(),
            topic: "orders.events".into(),
            message_key: order.into(),
            event_type: format!("E{seq}"),
            correlation_id: "c".into(),
            traceparent: None,
            payload: serde_json::json!({ "seq": seq }).to_string(),
            created_at: chrono::Utc::now(),
        }
    }

    /// A broker that fails every `fail_every`-th delivery (counting all sends) and answers
    /// after a delay that varies from send to send, so acknowledgements arrive out of order.
    /// It records what reached the topic: (order, seq) of every acknowledged delivery, in the
    /// order the deliveries were handed to it, and every send with the orders in flight.
    #[derive(Clone, Default)]
    struct FlakyBroker {
        fail_every: usize,
        log: Arc<Mutex<BrokerLog>>,
    }

    #[derive(Default)]
    struct BrokerLog {
        sends: usize,
        /// (order, seq) for each send, in sending order, and whether it will succeed.
        sent: Vec<(String, u32, bool)>,
        /// Orders with a delivery not yet answered.
        unanswered: HashMap<String, usize>,
        /// A send for an order that still had one unanswered.
        overlaps: usize,
    }

    impl Sink for FlakyBroker {
        fn send(&self, row: &Outgoing) -> BoxFuture<'static, Result<(), KafkaError>> {
            let payload: serde_json::Value = serde_json::from_str(&row.payload).unwrap_or_default();
            let seq = payload["seq"].as_u64().unwrap_or_default() as u32;
            let order = row.message_key.clone();
            let mut log = self.log.lock().unwrap();
            log.sends += 1;
            let ok = self.fail_every == 0 || !log.sends.is_multiple_of(self.fail_every);
            log.sent.push((order.clone(), seq, ok));
            let unanswered = log.unanswered.entry(order.clone()).or_default();
            *unanswered += 1;
            if *unanswered > 1 {
                log.overlaps += 1;
            }
            let delay = Duration::from_micros((log.sends as u64 * 7_919) % 3_000);
            drop(log);
            let log = Arc::clone(&self.log);
            async move {
                tokio::time::sleep(delay).await;
                *log.lock().unwrap().unanswered.entry(order).or_default() -= 1;
                if ok { Ok(()) } else { Err(KafkaError::Canceled) }
            }
            .boxed()
        }
    }

    /// Runs the pipeline until the outbox is empty, committing the rows `late` (each the
    /// only event of an order of its own) one by one while it runs. As the relay does, it
    /// reads only when not caught up, and a commit tells it to look again (a notification).
    async fn drain(pipeline: &mut Pipeline, store: &mut MemoryStore, broker: &FlakyBroker, mut late: Vec<i64>) {
        for _ in 0..10_000 {
            if store.rows.is_empty() && late.is_empty() && pipeline.is_idle() {
                return;
            }
            if !pipeline.caught_up() {
                pipeline.fill(store, broker).await.unwrap();
            }
            if let Some(settled) = pipeline.settle_oldest(store, |_, _| Ok::<_, String>(())).await {
                settled.unwrap();
            }
            if let Some(id) = late.pop() {
                store.commit(id, &format!("o{id}"), 0);
                pipeline.look_again();
            }
        }
        panic!("the outbox never emptied");
    }

    /// For every order: the events that reached the topic, first copies only, must be
    /// 0, 1, 2… in order, and nothing may follow a failed delivery before its retry.
    fn assert_in_order(log: &BrokerLog, orders: &[&str], events_per_order: u32) {
        for order in orders {
            let mut delivered = Vec::new();
            for (o, seq, ok) in &log.sent {
                if o == order && *ok && !delivered.contains(seq) {
                    delivered.push(*seq);
                }
            }
            assert_eq!(delivered, (0..events_per_order).collect::<Vec<_>>(), "events of order {order} on the topic");
        }
        assert_eq!(log.overlaps, 0, "an order had two events in flight at once");
    }

    #[tokio::test]
    async fn failed_deliveries_mid_pipeline_are_retried_before_any_later_event_of_their_order() {
        let orders = ["a", "b", "c", "d", "e", "f", "g"];
        let mut store = MemoryStore::default();
        let mut id = 0;
        for seq in 0..6 {
            for order in orders {
                id += 1;
                store.commit(id, order, seq);
            }
        }
        let broker = FlakyBroker { fail_every: 5, ..FlakyBroker::default() };
        let mut pipeline = Pipeline::new(4, 3);
        drain(&mut pipeline, &mut store, &broker, Vec::new()).await;

        let log = broker.log.lock().unwrap();
        assert!(log.sent.iter().any(|(_, _, ok)| !ok), "the broker failed some deliveries");
        assert_in_order(&log, &orders, 6);
        let mut deleted = store.deleted.clone();
        deleted.sort_unstable();
        assert_eq!(deleted, (1..=id).collect::<Vec<_>>(), "every row deleted exactly once");
    }

    #[tokio::test]
    async fn only_acknowledged_rows_are_deleted() {
        let mut store = MemoryStore::default();
        for (id, order) in [(1, "a"), (2, "b"), (3, "c"), (4, "d")] {
            store.commit(id, order, 0);
        }
        let broker = FlakyBroker { fail_every: 2, ..FlakyBroker::default() };
        let mut pipeline = Pipeline::new(2, 2);
        pipeline.fill(&mut store, &broker).await.unwrap();
        let first = pipeline.settle_oldest(&mut store, |_, _| Ok::<_, String>(())).await.unwrap().unwrap();
        let second = pipeline.settle_oldest(&mut store, |_, _| Ok::<_, String>(())).await.unwrap().unwrap();
        assert_eq!((first.answered.acknowledged, second.answered.acknowledged), (vec![true, false], vec![true, false]));
        assert_eq!(store.deleted, [1, 3]);
        assert_eq!(store.rows.keys().copied().collect::<Vec<_>>(), [2, 4], "the failed rows wait to be sent again");
    }

    #[tokio::test]
    async fn a_row_committed_late_with_a_lower_id_is_still_published() {
        // Ids 1..=20 drawn by as many orders; 3, 8 and 13 commit only once the relay has
        // read past them.
        let mut store = MemoryStore::default();
        let late_ids = [3, 8, 13];
        for id in (1..=20).filter(|id| !late_ids.contains(id)) {
            store.commit(id, &format!("o{id}"), 0);
        }
        let broker = FlakyBroker::default();
        let mut pipeline = Pipeline::new(2, 4);
        drain(&mut pipeline, &mut store, &broker, late_ids.to_vec()).await;
        let mut deleted = store.deleted.clone();
        deleted.sort_unstable();
        assert_eq!(deleted, (1..=20).collect::<Vec<_>>(), "every committed row was published and deleted");
    }

    #[tokio::test]
    async fn a_short_read_is_caught_up_until_a_delivery_fails_or_a_commit_is_announced() {
        let mut store = MemoryStore::default();
        for (id, order) in [(1, "a"), (2, "b"), (3, "c")] {
            store.commit(id, order, 0);
        }
        let broker = FlakyBroker { fail_every: 3, ..FlakyBroker::default() };
        let mut pipeline = Pipeline::new(4, 2);
        assert!(!pipeline.caught_up(), "a new pipeline has read nothing yet");
        pipeline.fill(&mut store, &broker).await.unwrap();
        assert!(pipeline.caught_up(), "a full batch, then a short one: everything is in flight");
        pipeline.take_oldest().await.expect("rows 1 and 2 acknowledged");
        assert!(pipeline.caught_up(), "an acknowledged batch leaves nothing to read");
        let answered = pipeline.take_oldest().await.expect("row 3 answered");
        assert_eq!(answered.failures(), 1);
        assert!(!pipeline.caught_up(), "row 3 failed and is in the outbox again");
        pipeline.fill(&mut store, &broker).await.unwrap();
        assert!(pipeline.caught_up());
        store.commit(4, "d", 0);
        pipeline.look_again();
        assert!(!pipeline.caught_up(), "a notification of a commit");

        let mut full = Pipeline::new(1, 2);
        full.fill(&mut store, &broker).await.unwrap();
        assert!(!full.caught_up(), "a full batch may have more rows behind it");
    }

    #[tokio::test]
    async fn an_orders_second_event_waits_for_the_first_acknowledgement() {
        let mut store = MemoryStore::default();
        for (id, order, seq) in [(1, "a", 0), (2, "b", 0), (3, "a", 1), (4, "c", 0)] {
            store.commit(id, order, seq);
        }
        let broker = FlakyBroker::default();
        let mut pipeline = Pipeline::new(4, 10);
        assert_eq!(pipeline.fill(&mut store, &broker).await.unwrap(), 2, "stops before a's second event");
        assert!(!pipeline.has_room(), "and reads again only after a batch settled");
        pipeline.settle_oldest(&mut store, |_, _| Ok::<_, String>(())).await.unwrap().unwrap();
        assert!(!pipeline.caught_up(), "a's second event is still to be read, without a notification");
        assert_eq!(pipeline.fill(&mut store, &broker).await.unwrap(), 2);
        let sent: Vec<_> = broker.log.lock().unwrap().sent.iter().map(|(o, s, _)| (o.clone(), *s)).collect();
        assert_eq!(sent, [("a".into(), 0), ("b".into(), 0), ("a".into(), 1), ("c".into(), 0)]);
    }

    #[tokio::test]
    async fn a_row_whose_delete_is_under_way_is_not_read_again() {
        let mut store = MemoryStore::default();
        for (id, order) in [(1, "a"), (2, "b"), (3, "c")] {
            store.commit(id, order, 0);
        }
        let broker = FlakyBroker::default();
        let mut pipeline = Pipeline::new(1, 2);
        pipeline.fill(&mut store, &broker).await.unwrap();
        let answered = pipeline.take_oldest().await.expect("a batch in flight");
        assert_eq!(answered.acknowledged_ids(), [1, 2]);
        // The delete of 1 and 2 runs elsewhere and has not committed: the next read skips them.
        assert_eq!(pipeline.fill(&mut store, &broker).await.unwrap(), 1);
        pipeline.take_oldest().await.expect("row 3 in flight");
        // The first delete is given up (its session died): the rows are read again.
        pipeline.deleted();
        pipeline.deleted();
        assert_eq!(pipeline.fill(&mut store, &broker).await.unwrap(), 2);
        let sent: Vec<_> = broker.log.lock().unwrap().sent.iter().map(|(o, _, _)| o.clone()).collect();
        assert_eq!(sent, ["a", "b", "c", "a", "b"]);
    }
}
