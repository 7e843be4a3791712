//! Several batches in flight: the relay reads and sends the next batch while the broker
//! acknowledges the previous ones, and settles batches in the order it sent them. A lane's
//! position moves over what the broker acknowledged, and only over that.
//!
//! One room, over 300 lines: batches, lanes and their segments are one state machine; the
//! rules below hold across all three.
//!
//! Each lane is read in windows ([`crate::window`]): a read takes the next rows of each lane
//! that may have some, after that lane's last row read. Two rules keep an order's events in
//! order on the topic, whatever fails:
//!
//! - **One event per order in flight.** A row is sent only when no earlier row of its order
//!   is waiting for its acknowledgement. The idempotent producer keeps the order of messages
//!   that succeed, but a message that fails (a delivery timeout while the broker is away)
//!   leaves a gap that later messages of the same partition would fill first. A lane's read
//!   stops at a row whose order has an earlier row in flight, and reads it again once a batch
//!   has settled.
//! - **Go back on a failure.** A lane whose row was not acknowledged starts reading again
//!   from the row after its last acknowledged one. What it had sent after the failed row is
//!   sent again, which consumers deduplicate, and nothing of the failed row's order was
//!   among it.
//!
//! A lane's acknowledged position ([`Position`]) is what the relay writes to `outbox_lanes`. A
//! crash between an acknowledgement and that write publishes the rows again, and consumers
//! deduplicate by event id.
//!
//! The pipeline is written against [`Store`] and [`Sink`] so that its rules can be tested
//! with transactions that commit out of order and deliveries that fail or arrive late
//! (`tests` below); the relay plugs in the outbox table and the Kafka producer.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::future::Future;
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use futures::future::{BoxFuture, MaybeDone, maybe_done};
use rdkafka::error::KafkaError;

use crate::publish::Outgoing;
use crate::window::{LaneRead, LaneReader, Position, ReadOutcome, Segment, Snapshot, Ticks};

/// Where the rows come from: the outbox log.
pub trait Store {
    type Error;
    /// The next rows of each lane of `reads`, at most `limit` each, sorted by lane and id;
    /// with the read's own snapshot and what it saw of the transaction ids and the id
    /// sequence.
    fn fetch(&mut self, reads: &[LaneRead], limit: i64) -> impl Future<Output = Result<Fetched, Self::Error>>;
}

/// What one read of the outbox returned.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The read statement's snapshot: a window it opened ends here.
    pub snapshot: Snapshot,
    /// The transaction id Postgres was about to hand out, and the id sequence's last value.
    pub next_xid: u64,
    pub seq: i64,
    pub rows: Vec<Outgoing>,
}

/// Where the rows are published: the broker. The returned future resolves with the
/// delivery's outcome; sending itself must not wait for it.
pub trait Sink {
    fn send(&self, row: &Outgoing) -> BoxFuture<'static, Result<(), KafkaError>>;
}

/// Every delivery's outcome, in sending order, and how long it took from the send until the
/// last of them was seen.
type Answers = (Vec<Result<(), KafkaError>>, Duration);

/// What one read took: its rows, and the lane segments they belong to.
type Taken = (Vec<Outgoing>, Vec<(i16, u64)>);

/// A batch whose deliveries are under way.
struct Batch {
    rows: Vec<Outgoing>,
    /// Each row's publication span (none when spans are not exported).
    hops: Vec<platform::trace::Hop>,
    /// The lane segments whose rows these are.
    segments: Vec<(i16, u64)>,
    /// Kept when done, so that waiting for it ([`Pipeline::wait_for_oldest`]) can be given up
    /// and resumed without losing the outcome.
    deliveries: MaybeDone<BoxFuture<'static, Answers>>,
}

/// The oldest batch, all its deliveries answered, taken out of the pipeline
/// ([`Pipeline::take_oldest`]).
#[derive(Debug)]
pub struct Answered {
    /// The batch's rows, in the order they were sent.
    pub rows: Vec<Outgoing>,
    /// For each row, whether the broker acknowledged it.
    pub acknowledged: Vec<bool>,
    /// From the send until every answer was seen.
    pub delivered_in: Duration,
    /// Each row's publication span, to end ([`crate::hops::settled`]).
    pub hops: Vec<platform::trace::Hop>,
}

impl Answered {
    /// The rows the broker acknowledged, in sending order.
    pub fn acknowledged_rows(&self) -> impl Iterator<Item = &Outgoing> {
        self.rows.iter().zip(&self.acknowledged).filter(|(_, ok)| **ok).map(|(row, _)| row)
    }

    pub fn failures(&self) -> usize {
        self.acknowledged.iter().filter(|ok| !**ok).count()
    }
}

/// A segment of a lane whose batch has not been settled yet.
struct Pending {
    id: u64,
    segment: Segment,
    /// The ids it took, in order.
    ids: Vec<i64>,
    /// Once its batch settled: whether each row was acknowledged.
    answers: Option<Vec<bool>>,
}

/// One lane this relay publishes.
struct Lane {
    reader: LaneReader,
    segments: VecDeque<Pending>,
    /// Everything up to here is on the broker.
    acked: Position,
    /// `acked` moved since [`Pipeline::moved_positions`] last took it.
    moved: bool,
    /// The last read closed its window with every row taken, and nothing failed since: every
    /// row committed before that read is in flight or published.
    caught_up: bool,
    /// The last read stopped at a row whose order has an earlier row in flight: read again
    /// only after a batch has settled.
    held: bool,
}

impl Lane {
    fn new(position: Position) -> Self {
        Self {
            reader: LaneReader::from(&position),
            segments: VecDeque::new(),
            acked: position,
            moved: false,
            caught_up: false,
            held: false,
        }
    }

    /// Moves the acknowledged position over the settled segments at the front; after a
    /// failure, goes back to read from the last acknowledged row.
    fn advance(&mut self) {
        while let Some(front) = self.segments.front() {
            let Some(answers) = &front.answers else { return };
            match answers.iter().position(|ok| !*ok) {
                None => {
                    self.acked = front.segment.end();
                    self.moved = true;
                    self.segments.pop_front();
                }
                Some(failed) => {
                    if failed > 0 {
                        self.acked = front.segment.up_to(front.ids[failed - 1]);
                        self.moved = true;
                    }
                    self.reader.reset(&self.acked);
                    self.segments.clear();
                    self.caught_up = false;
                    return;
                }
            }
        }
    }
}

/// The relay's batches in flight, for one outbox session.
pub struct Pipeline {
    depth: usize,
    batch_size: i64,
    in_flight: VecDeque<Batch>,
    /// Message keys (order ids) with a row in flight.
    keys: HashSet<String>,
    ticks: Ticks,
    lanes: BTreeMap<i16, Lane>,
    next_segment: u64,
}

impl Pipeline {
    /// Up to `depth` batches of about `batch_size` rows in flight at a time.
    pub fn new(depth: usize, batch_size: i64) -> Self {
        Self {
            depth: depth.max(1),
            batch_size: batch_size.max(1),
            in_flight: VecDeque::new(),
            keys: HashSet::new(),
            ticks: Ticks::default(),
            lanes: BTreeMap::new(),
            next_segment: 0,
        }
    }

    /// Starts publishing `lane` from `position` (where its last publisher left it).
    pub fn add_lane(&mut self, lane: i16, position: Position) {
        self.lanes.insert(lane, Lane::new(position));
    }

    /// Stops publishing `lane`: given away, or taken by another relay. What of it is in
    /// flight is settled as usual but moves nothing.
    pub fn remove_lane(&mut self, lane: i16) {
        self.lanes.remove(&lane);
    }

    /// The lanes this pipeline publishes, in order.
    pub fn lanes(&self) -> Vec<i16> {
        self.lanes.keys().copied().collect()
    }

    /// Where `lane` stands on the broker.
    pub fn position(&self, lane: i16) -> Option<&Position> {
        self.lanes.get(&lane).map(|l| &l.acked)
    }

    /// The positions that moved since the last call, to be written.
    pub fn moved_positions(&mut self) -> Vec<(i16, Position)> {
        let mut moved = Vec::new();
        for (lane, state) in &mut self.lanes {
            if std::mem::take(&mut state.moved) {
                moved.push((*lane, state.acked.clone()));
            }
        }
        moved
    }

    /// The lowest floor of this pipeline's lanes: no row at or below it is left to publish.
    pub fn lowest_floor(&self) -> Option<i64> {
        self.lanes.values().map(|lane| lane.acked.floor).min()
    }

    /// Whether a position moved since [`Pipeline::moved_positions`] last took them.
    pub fn has_moved(&self) -> bool {
        self.lanes.values().any(|lane| lane.moved)
    }

    /// Writing `positions` (from [`Pipeline::moved_positions`]) failed: they are to be
    /// written again.
    pub fn unwritten(&mut self, positions: &[(i16, Position)]) {
        for (lane, _) in positions {
            if let Some(state) = self.lanes.get_mut(lane) {
                state.moved = true;
            }
        }
    }

    /// Whether another read would find only rows committed since the last one (every lane's
    /// last read closed its window).
    pub fn caught_up(&self) -> bool {
        self.lanes.values().all(|lane| lane.caught_up)
    }

    /// New rows may be there (a notification, a poll, lanes taken over): read again.
    pub fn look_again(&mut self) {
        for lane in self.lanes.values_mut() {
            lane.caught_up = false;
        }
    }

    /// Whether any batch is waiting for acknowledgements.
    pub fn is_idle(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// Whether nothing of `lane` is in flight.
    pub fn lane_is_settled(&self, lane: i16) -> bool {
        self.lanes.get(&lane).is_none_or(|state| state.segments.is_empty())
    }

    /// Whether another read could add a batch now.
    pub fn has_room(&self) -> bool {
        self.in_flight.len() < self.depth && self.lanes.values().any(|lane| !lane.held)
    }

    /// The oldest transaction the reads may still ask a floor for.
    fn oldest_needed(&self) -> Option<u64> {
        self.lanes.values().map(|lane| lane.reader.oldest_needed()).min()
    }

    /// Reads and sends batches until `depth` are in flight, no lane has more, or each lane
    /// that has must wait for an earlier row of an order. Returns how many rows it sent.
    ///
    /// A batch is handed to the producer while the next read runs: Postgres reads while the
    /// relay sends, instead of each waiting for the other.
    pub async fn fill<S: Store>(&mut self, store: &mut S, sink: &impl Sink) -> Result<usize, S::Error> {
        let mut sent = 0;
        let mut unsent: Option<Taken> = None;
        while self.in_flight.len() + usize::from(unsent.is_some()) < self.depth {
            let reads: Vec<LaneRead> = self
                .lanes
                .iter()
                .filter(|(_, lane)| !lane.caught_up && !lane.held)
                .map(|(id, lane)| lane.reader.next_read(*id, &self.ticks))
                .collect();
            if reads.is_empty() {
                break;
            }
            let limit = (self.batch_size as usize).div_ceil(reads.len()).max(1);
            let previous = unsent.take();
            let (fetched, ()) = futures::join!(store.fetch(&reads, limit as i64), async {
                if let Some((rows, segments)) = previous {
                    self.dispatch(rows, segments, sink);
                }
            });
            let fetched = fetched?;
            self.ticks.record(fetched.next_xid, fetched.seq);
            let (rows, segments) = self.take(&reads, limit, &fetched);
            if let Some(oldest) = self.oldest_needed() {
                self.ticks.forget_below(oldest);
            }
            if !rows.is_empty() {
                sent += rows.len();
                unsent = Some((rows, segments));
            }
        }
        if let Some((rows, segments)) = unsent {
            self.dispatch(rows, segments, sink);
        }
        Ok(sent)
    }

    /// Hands `rows` to the producer as one batch in flight.
    fn dispatch(&mut self, mut rows: Vec<Outgoing>, segments: Vec<(i16, u64)>, sink: &impl Sink) {
        let hops = crate::hops::sending(&mut rows);
        let sent_at = Instant::now();
        let deliveries = futures::future::join_all(rows.iter().map(|row| sink.send(row)).collect::<Vec<_>>())
            .map(move |answers| (answers, sent_at.elapsed()));
        self.in_flight.push_back(Batch { rows, hops, segments, deliveries: maybe_done(deliveries.boxed()) });
    }

    /// Takes what each lane's read returned: the longest prefix whose orders have nothing
    /// in flight (each order at most once), and records a segment per lane. Returns the rows
    /// to send and their segments.
    fn take(&mut self, reads: &[LaneRead], limit: usize, fetched: &Fetched) -> Taken {
        let mut taken = Vec::new();
        let mut segments = Vec::new();
        for read in reads {
            let Some(lane) = self.lanes.get_mut(&read.lane) else { continue };
            let returned: Vec<&Outgoing> = fetched.rows.iter().filter(|row| row.lane == read.lane).collect();
            let mut ids = Vec::new();
            let mut all_taken = true;
            for row in &returned {
                if !self.keys.insert(row.message_key.clone()) {
                    all_taken = false;
                    break;
                }
                ids.push(row.id);
                taken.push((*row).clone());
            }
            let outcome = ReadOutcome { rows: returned.len(), limit, last_taken: ids.last().copied(), all_taken };
            let segment = lane.reader.read(read, &fetched.snapshot, outcome, &self.ticks);
            tracing::trace!(
                lane = read.lane,
                lo = %read.lo,
                hi = %segment.hi,
                opened = read.hi.is_none(),
                after = read.after,
                late = ?read.late,
                start = segment.after,
                rows = returned.len(),
                first = returned.first().map(|row| row.id),
                last = segment.last,
                closes = segment.closes,
                hi_floor = segment.hi_floor,
                next_xid = fetched.next_xid,
                seq = fetched.seq,
                "lane read"
            );
            lane.caught_up = segment.closes;
            lane.held = !all_taken;
            let id = self.next_segment;
            self.next_segment += 1;
            let answers = ids.is_empty().then(Vec::new);
            if answers.is_none() {
                segments.push((read.lane, id));
            }
            lane.segments.push_back(Pending { id, segment, ids, answers });
            lane.advance();
        }
        (taken, segments)
    }

    /// Resolves when every delivery of the oldest batch has been answered (at once when
    /// nothing is in flight). Safe to give up and call again.
    pub async fn wait_for_oldest(&mut self) {
        if let Some(batch) = self.in_flight.front_mut() {
            (&mut batch.deliveries).await;
        }
    }

    /// Waits for the oldest batch's deliveries and takes it out of the pipeline: its orders
    /// may send their next event, and its lanes' positions move over what was acknowledged.
    /// `None` when nothing is in flight.
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
            self.keys.remove(&row.message_key);
        }
        let acknowledged: Vec<bool> = results.iter().map(Result::is_ok).collect();
        for (lane_id, segment_id) in &batch.segments {
            let Some(lane) = self.lanes.get_mut(lane_id) else { continue };
            let Some(pending) = lane.segments.iter_mut().find(|p| p.id == *segment_id) else { continue };
            let answers = batch
                .rows
                .iter()
                .zip(&acknowledged)
                .filter(|(row, _)| row.lane == *lane_id)
                .map(|(_, ok)| *ok)
                .collect();
            pending.answers = Some(answers);
            lane.advance();
        }
        for lane in self.lanes.values_mut() {
            lane.held = false;
        }
        Some(Answered { rows: batch.rows, acknowledged, delivered_in, hops: batch.hops })
    }
}

#[cfg(test)]
mod tests;
