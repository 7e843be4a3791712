//! The pipeline against an outbox in memory that behaves as Postgres does where it matters:
//! transactions take ids when they first write, draw outbox ids as they write, commit or roll
//! back in any order, and snapshots list the running ones the way `pg_current_snapshot()`
//! does (a running transaction above the newest finished one is left out). The broker fails
//! and answers late on purpose.
//!
//! One room, over 300 lines: the in-memory outbox and broker are the tests' fixture, and
//! every test below drives the pipeline against both.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt as _;

use super::*;

/// A small deterministic generator (xorshift), so that a failing interleaving can be replayed
/// from its seed.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, sides: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % sides
    }
}

#[derive(Debug, Clone)]
struct Row {
    id: i64,
    tx: u64,
    key: String,
    lane: i16,
}

/// The outbox log and the transactions writing to it.
#[derive(Default)]
struct MemoryLog {
    next_xid: u64,
    seq: i64,
    /// Running transactions: their id (once they wrote) and the keys they locked.
    running: BTreeMap<u64, BTreeSet<String>>,
    committed: BTreeSet<u64>,
    finished_max: u64,
    rows: BTreeMap<i64, Row>,
    /// For each read: rows it walked past (committed, in its lanes, above its start) that it
    /// did not return because they were published already.
    walked: Vec<usize>,
    /// A transaction the test holds open, and the reads made while it was.
    held: Option<u64>,
    walked_while_held: Vec<usize>,
}

impl MemoryLog {
    fn new() -> Self {
        Self { next_xid: 100, finished_max: 99, ..Self::default() }
    }

    /// A transaction takes its id (as `outbox_next_id()` makes it do before its first id).
    fn begin(&mut self) -> u64 {
        let xid = self.next_xid;
        self.next_xid += 1;
        self.running.insert(xid, BTreeSet::new());
        xid
    }

    /// Whether `xid` may write an event of `key`: it would have to lock the order's row, which
    /// another running transaction may hold.
    fn may_write(&self, xid: u64, key: &str) -> bool {
        self.running.iter().all(|(other, keys)| *other == xid || !keys.contains(key))
    }

    fn write(&mut self, xid: u64, key: &str) -> i64 {
        self.seq += 1;
        let lane = (key.bytes().map(u64::from).sum::<u64>() % 4) as i16;
        self.rows.insert(self.seq, Row { id: self.seq, tx: xid, key: key.to_owned(), lane });
        self.running.get_mut(&xid).expect("running").insert(key.to_owned());
        self.seq
    }

    fn finish(&mut self, xid: u64, commit: bool) {
        self.running.remove(&xid);
        self.finished_max = self.finished_max.max(xid);
        if commit {
            self.committed.insert(xid);
        } else {
            self.rows.retain(|_, row| row.tx != xid);
        }
    }

    /// `pg_current_snapshot()`: xmax is one past the newest finished transaction, and only
    /// running transactions below it are listed.
    fn snapshot(&self) -> Snapshot {
        let xmax = self.finished_max + 1;
        let xip: Vec<u64> = self.running.keys().copied().filter(|&x| x < xmax).collect();
        Snapshot { xmin: xip.first().copied().unwrap_or(xmax), xmax, xip }
    }

    fn visible(&self, row: &Row) -> bool {
        self.committed.contains(&row.tx)
    }
}

impl Store for MemoryLog {
    type Error = String;

    async fn fetch(&mut self, reads: &[LaneRead], limit: i64) -> Result<Fetched, String> {
        let snapshot = self.snapshot();
        let mut rows = Vec::new();
        let mut walked = 0;
        for read in reads {
            let start =
                read.late.iter().filter(|(x, _)| snapshot.sees(*x)).map(|&(_, floor)| floor).fold(read.after, i64::min);
            // A start above a row of the window would skip it: the floors must never allow that.
            for row in self.rows.values().filter(|r| r.lane == read.lane && self.visible(r)) {
                let in_window = !read.lo.sees(row.tx) && read.hi.as_ref().is_none_or(|hi| hi.sees(row.tx));
                let already_read = read.hi.is_some() && row.id <= read.after;
                assert!(
                    !in_window || already_read || row.id > start,
                    "row {} (tx {}) of the window lies at or below the read's start {start}: {read:?}",
                    row.id,
                    row.tx
                );
            }
            let lane_rows: Vec<&Row> = self
                .rows
                .range(start + 1..)
                .map(|(_, row)| row)
                .filter(|row| row.lane == read.lane && self.visible(row))
                .collect();
            walked += lane_rows.iter().filter(|row| read.lo.sees(row.tx)).count();
            rows.extend(
                lane_rows
                    .into_iter()
                    .filter(|row| !read.lo.sees(row.tx) && read.hi.as_ref().is_none_or(|hi| hi.sees(row.tx)))
                    .take(limit as usize)
                    .map(|row| outgoing(row.id, row.lane, &row.key)),
            );
        }
        self.walked.push(walked);
        if self.held.is_some_and(|x| self.running.contains_key(&x)) {
            self.walked_while_held.push(walked);
        }
        Ok(Fetched { snapshot, next_xid: self.next_xid, seq: self.seq, rows })
    }
}

fn outgoing(id: i64, lane: i16, key: &str) -> Outgoing {
    Outgoing {
        id,
        lane,
        event_id: uuid::Uuid::now_v7(),
        topic: "orders.events".into(),
        message_key: key.into(),
        event_type: "E".into(),
        correlation_id: "c".into(),
        traceparent: None,
        payload: serde_json::json!({ "id": id }).to_string(),
        created_at: chrono::Utc::now(),
    }
}

/// A broker that fails every `fail_every`-th delivery (counting all sends) and answers after
/// a delay that varies from send to send, so acknowledgements arrive out of order. It records
/// every send: (order, outbox id, whether it will succeed), and sends for an order that still
/// had one unanswered.
#[derive(Clone, Default)]
struct FlakyBroker {
    fail_every: usize,
    log: Arc<Mutex<BrokerLog>>,
}

#[derive(Default)]
struct BrokerLog {
    sends: usize,
    sent: Vec<(String, i64, bool)>,
    unanswered: HashMap<String, usize>,
    overlaps: usize,
}

impl Sink for FlakyBroker {
    fn send(&self, row: &Outgoing) -> BoxFuture<'static, Result<(), KafkaError>> {
        let order = row.message_key.clone();
        let mut log = self.log.lock().unwrap();
        log.sends += 1;
        let ok = self.fail_every == 0 || !log.sends.is_multiple_of(self.fail_every);
        log.sent.push((order.clone(), row.id, ok));
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

/// Every committed row reached the topic; for every order, the first copies of its events
/// are in id order; nothing rolled back was sent; no order had two events in flight.
fn assert_published(log: &MemoryLog, broker: &BrokerLog) {
    let mut first_copies: HashMap<&str, Vec<i64>> = HashMap::new();
    let mut delivered = BTreeSet::new();
    for (order, id, ok) in &broker.sent {
        assert!(log.rows.contains_key(id), "row {id} was rolled back, yet sent");
        if *ok && delivered.insert(*id) {
            first_copies.entry(order.as_str()).or_default().push(*id);
        }
    }
    let committed: BTreeSet<i64> = log.rows.values().filter(|r| log.visible(r)).map(|r| r.id).collect();
    let missing: Vec<_> = committed.difference(&delivered).collect();
    assert!(missing.is_empty(), "committed rows never published: {missing:?}");
    for (order, ids) in first_copies {
        assert!(ids.is_sorted(), "events of order {order} reached the topic out of order: {ids:?}");
    }
    assert_eq!(broker.overlaps, 0, "an order had two events in flight at once");
}

/// One step of the relay, as its loop takes them: read when not caught up, then settle the
/// oldest batch.
async fn relay_step(pipeline: &mut Pipeline, log: &mut MemoryLog, broker: &FlakyBroker) {
    if !pipeline.caught_up() {
        pipeline.fill(log, broker).await.unwrap();
    }
    pipeline.take_oldest().await;
}

/// Until everything committed is published and settled.
async fn drain(pipeline: &mut Pipeline, log: &mut MemoryLog, broker: &FlakyBroker) {
    for _ in 0..10_000 {
        pipeline.look_again();
        pipeline.fill(log, broker).await.unwrap();
        if pipeline.is_idle() {
            return;
        }
        while pipeline.take_oldest().await.is_some() {}
    }
    panic!("the pipeline never settled");
}

fn pipeline_with_lanes(depth: usize, batch: i64) -> Pipeline {
    let mut pipeline = Pipeline::new(depth, batch);
    for lane in 0..4 {
        pipeline.add_lane(lane, Position::start());
    }
    pipeline
}

/// Writers on 12 orders commit and roll back in random order, some transactions writing
/// several events, while the relay reads, sends and settles, and the broker fails every
/// seventh delivery.
async fn random_interleaving(seed: u64) {
    let mut dice = Dice(seed);
    let mut log = MemoryLog::new();
    let broker = FlakyBroker { fail_every: 7, ..FlakyBroker::default() };
    let mut pipeline = pipeline_with_lanes(3, 5);
    let mut open: Vec<u64> = Vec::new();
    for _ in 0..400 {
        match dice.roll(6) {
            0 | 1 => open.push(log.begin()),
            2 if !open.is_empty() => {
                let xid = open[dice.roll(open.len() as u64) as usize];
                let key = format!("o{}", dice.roll(12));
                if log.may_write(xid, &key) {
                    log.write(xid, &key);
                }
            }
            3 if !open.is_empty() => {
                let xid = open.swap_remove(dice.roll(open.len() as u64) as usize);
                log.finish(xid, dice.roll(5) != 0);
                pipeline.look_again();
            }
            _ => relay_step(&mut pipeline, &mut log, &broker).await,
        }
    }
    for xid in open {
        log.finish(xid, true);
    }
    drain(&mut pipeline, &mut log, &broker).await;
    assert_published(&log, &broker.log.lock().unwrap());
    for lane in 0..4 {
        let position = pipeline.position(lane).expect("lane");
        for row in log.rows.values().filter(|r| r.lane == lane && log.visible(r)) {
            assert!(position.covers(row.tx, row.id), "lane {lane} stands before row {}: {position:?}", row.id);
        }
    }
}

#[tokio::test]
async fn every_committed_row_is_published_in_order_whatever_commits_late_or_fails() {
    for seed in 1..=60 {
        random_interleaving(seed * 0x9e37_79b9).await;
    }
}

#[tokio::test]
async fn a_transaction_held_open_is_published_once_it_commits_and_costs_the_reads_nothing_meanwhile() {
    let mut log = MemoryLog::new();
    let broker = FlakyBroker::default();
    let mut pipeline = pipeline_with_lanes(4, 50);
    let long = log.begin();
    log.write(long, "long-order");
    log.held = Some(long);
    for i in 0..600 {
        let xid = log.begin();
        log.write(xid, &format!("o{}", i % 40));
        log.finish(xid, true);
        pipeline.look_again();
        relay_step(&mut pipeline, &mut log, &broker).await;
    }
    log.write(long, "long-order");
    log.finish(long, true);
    drain(&mut pipeline, &mut log, &broker).await;
    assert_published(&log, &broker.log.lock().unwrap());
    let worst = log.walked_while_held.iter().max().copied().unwrap_or(0);
    assert!(worst <= 8, "while the long transaction ran, a read walked past {worst} published rows");
    assert!(log.walked_while_held.len() > 500);
}

#[tokio::test]
async fn an_orders_second_event_waits_for_the_first_acknowledgement() {
    let mut log = MemoryLog::new();
    for key in ["a", "b", "a", "c"] {
        let xid = log.begin();
        log.write(xid, key);
        log.finish(xid, true);
    }
    let broker = FlakyBroker::default();
    let mut pipeline = Pipeline::new(4, 10);
    pipeline.add_lane(0, Position::start());
    pipeline.add_lane(1, Position::start());
    pipeline.add_lane(2, Position::start());
    pipeline.add_lane(3, Position::start());
    pipeline.fill(&mut log, &broker).await.unwrap();
    let sent: Vec<_> = broker.log.lock().unwrap().sent.iter().map(|(o, id, _)| (o.clone(), *id)).collect();
    assert!(!sent.contains(&("a".into(), 3)), "a's second event waits: {sent:?}");
    assert!(!pipeline.has_room() || !pipeline.caught_up(), "a's lane reads again only after a batch settled");
    drain(&mut pipeline, &mut log, &broker).await;
    let sent: Vec<_> = broker.log.lock().unwrap().sent.iter().map(|(o, id, _)| (o.clone(), *id)).collect();
    let a: Vec<i64> = sent.iter().filter(|(o, _)| o == "a").map(|(_, id)| *id).collect();
    assert_eq!(a, [1, 3]);
}

#[tokio::test]
async fn a_position_moves_only_over_acknowledged_rows_and_a_failure_is_sent_again() {
    let mut log = MemoryLog::new();
    for i in 0..6 {
        let xid = log.begin();
        log.write(xid, &format!("k{i}"));
        log.finish(xid, true);
    }
    let broker = FlakyBroker { fail_every: 4, ..FlakyBroker::default() };
    let mut pipeline = Pipeline::new(1, 100);
    for lane in 0..4 {
        pipeline.add_lane(lane, Position::start());
    }
    pipeline.fill(&mut log, &broker).await.unwrap();
    let answered = pipeline.take_oldest().await.expect("a batch");
    assert_eq!(answered.failures(), 1);
    let failed = answered.rows.iter().zip(&answered.acknowledged).find(|(_, ok)| !**ok).map(|(r, _)| r).unwrap();
    let row = &log.rows[&failed.id];
    let position = pipeline.position(failed.lane).unwrap().clone();
    assert!(!position.covers(row.tx, row.id), "the failed row is not behind its lane's position");
    assert!(!pipeline.caught_up(), "its lane reads it again");
    drain(&mut pipeline, &mut log, &broker).await;
    assert_published(&log, &broker.log.lock().unwrap());
    let moved = pipeline.moved_positions();
    assert_eq!(moved.len(), 4, "every lane's position moved and is to be written");
    assert!(pipeline.moved_positions().is_empty());
}

#[tokio::test]
async fn a_removed_lane_moves_no_more_and_its_batches_still_settle() {
    let mut log = MemoryLog::new();
    for i in 0..20 {
        let xid = log.begin();
        log.write(xid, &format!("k{i}"));
        log.finish(xid, true);
    }
    let broker = FlakyBroker::default();
    let mut pipeline = pipeline_with_lanes(4, 8);
    pipeline.fill(&mut log, &broker).await.unwrap();
    let lost = pipeline.lanes()[0];
    pipeline.remove_lane(lost);
    while pipeline.take_oldest().await.is_some() {}
    assert!(pipeline.position(lost).is_none());
    assert!(pipeline.lanes().iter().all(|lane| pipeline.lane_is_settled(*lane)));
}
