//! What the relay records, kept once: the Prometheus families below are both what
//! `/metrics` shows and what `/health` and tests read, through [`OutboxMetrics`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Unit;

use platform::metrics::{Metrics, latency_histogram};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutboxLabels {
    outbox: String,
}

/// Where a relay's time goes: the reads that find its batches' rows, the broker's answers to
/// all of them, and the writes of the lanes' positions (with their leases).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // the label values Prometheus queries use
pub enum Stage {
    /// One read of the outbox (a batch, or nothing new).
    read,
    /// From handing a batch to the producer until the relay has every answer for it. The
    /// relay collects answers between its reads, so this includes the reads of the batches
    /// sent after it.
    delivery,
    /// One write of the positions that moved (and of the leases).
    position,
    /// A read's wait for the synchronous standbys to flush its rows' commits (decision 0030).
    standby,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    outbox: String,
    stage: Stage,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PublishedLabels {
    outbox: String,
    topic: String,
}

/// The relay process's families, one series per outbox (or topic).
#[derive(Clone)]
pub struct RelayMetrics {
    published: Family<PublishedLabels, Counter>,
    commit_to_ack: Family<OutboxLabels, Histogram>,
    pending: Family<OutboxLabels, Gauge>,
    oldest_age: Family<OutboxLabels, Gauge<f64, AtomicU64>>,
    active: Family<OutboxLabels, Gauge>,
    lanes: Family<OutboxLabels, Gauge>,
    stages: Family<StageLabels, Histogram>,
    reclaimed: Family<OutboxLabels, Counter>,
    reclaim_busy: Family<OutboxLabels, Counter>,
    standby_holds: Family<OutboxLabels, Counter>,
    sleeps: Family<OutboxLabels, Counter>,
}

impl Default for RelayMetrics {
    fn default() -> Self {
        Self {
            published: Family::default(),
            commit_to_ack: Family::new_with_constructor(latency_histogram),
            pending: Family::default(),
            oldest_age: Family::default(),
            active: Family::default(),
            lanes: Family::default(),
            // A read or a delete takes a fraction of a millisecond to a few: from 0.1 ms.
            stages: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0001, 2.0, 18))),
            reclaimed: Family::default(),
            reclaim_busy: Family::default(),
            standby_holds: Family::default(),
            sleeps: Family::default(),
        }
    }
}

impl RelayMetrics {
    /// Shows the families on `metrics`' `/metrics`.
    pub fn register(&self, metrics: &Metrics) {
        metrics.register(
            "relay_published_events",
            "Events published and acknowledged, by outbox and topic",
            self.published.clone(),
        );
        metrics.register_with_unit(
            "relay_commit_to_ack",
            "From the outbox row's commit to the broker's acknowledgement",
            Unit::Seconds,
            self.commit_to_ack.clone(),
        );
        metrics.register("outbox_pending_rows", "Outbox rows not yet published", self.pending.clone());
        metrics.register_with_unit(
            "outbox_oldest_pending_age",
            "Age of the oldest unpublished outbox row (0 when empty)",
            Unit::Seconds,
            self.oldest_age.clone(),
        );
        metrics.register(
            "relay_active",
            "1 if this instance publishes some of the outbox's lanes",
            self.active.clone(),
        );
        metrics.register(
            "relay_lanes_held",
            "How many of the outbox's lanes this instance publishes",
            self.lanes.clone(),
        );
        metrics.register_with_unit(
            "relay_batch_stage",
            "How long a relay's reads, deliveries (until every answer) and position writes take",
            Unit::Seconds,
            self.stages.clone(),
        );
        metrics.register(
            "outbox_partitions_reclaimed",
            "Partitions of the outbox log truncated once every lane had published them",
            self.reclaimed.clone(),
        );
        metrics.register(
            "outbox_reclaim_busy",
            "Truncations of a published partition put off because someone held it (tried again later)",
            self.reclaim_busy.clone(),
        );
        metrics.register(
            "relay_standby_holds",
            "Reads whose rows the synchronous standbys had not flushed within the bound: publishing held, the session started again",
            self.standby_holds.clone(),
        );
        metrics.register(
            "relay_sleeps",
            "Times the relay ran out of rows and slept on LISTEN: while it sleeps, its writers notify, and every notifying commit waits for the others' WAL flushes",
            self.sleeps.clone(),
        );
    }

    /// The series of one outbox.
    pub fn outbox(&self, name: &str) -> OutboxMetrics {
        let labels = OutboxLabels { outbox: name.to_owned() };
        OutboxMetrics {
            outbox: name.to_owned(),
            published: self.published.clone(),
            published_by_topic: Arc::default(),
            commit_to_ack: self.commit_to_ack.get_or_create_owned(&labels),
            pending: self.pending.get_or_create_owned(&labels),
            oldest_age: self.oldest_age.get_or_create_owned(&labels),
            active: self.active.get_or_create_owned(&labels),
            lanes: self.lanes.get_or_create_owned(&labels),
            stages: [Stage::read, Stage::delivery, Stage::position, Stage::standby]
                .map(|stage| self.stages.get_or_create_owned(&StageLabels { outbox: name.to_owned(), stage })),
            reclaimed: self.reclaimed.get_or_create_owned(&labels),
            reclaim_busy: self.reclaim_busy.get_or_create_owned(&labels),
            standby_holds: self.standby_holds.get_or_create_owned(&labels),
            sleeps: self.sleeps.get_or_create_owned(&labels),
            held_for_standby: Arc::default(),
            measured: Arc::default(),
        }
    }
}

/// One outbox's series: what its relay writes and what `/health` reads.
#[derive(Clone)]
pub struct OutboxMetrics {
    outbox: String,
    published: Family<PublishedLabels, Counter>,
    /// This outbox's published counters by topic, so that recording a publication does not
    /// build labels each time, and the outbox's own count can be added up.
    published_by_topic: Arc<Mutex<HashMap<String, Counter>>>,
    commit_to_ack: Histogram,
    pending: Gauge,
    oldest_age: Gauge<f64, AtomicU64>,
    active: Gauge,
    lanes: Gauge,
    /// By [`Stage`], in its declaration order.
    stages: [Histogram; 4],
    reclaimed: Counter,
    reclaim_busy: Counter,
    standby_holds: Counter,
    sleeps: Counter,
    /// Whether the last wait for the synchronous standbys ran past its bound (decision 0030).
    held_for_standby: Arc<AtomicBool>,
    /// Whether `pending` and `oldest_age` were ever measured (a standby never measures).
    measured: Arc<AtomicBool>,
}

impl OutboxMetrics {
    pub fn published(&self, topic: &str, commit_to_ack_seconds: f64) {
        let mut by_topic = lock(&self.published_by_topic);
        if !by_topic.contains_key(topic) {
            let labels = PublishedLabels { outbox: self.outbox.clone(), topic: topic.to_owned() };
            by_topic.insert(labels.topic.clone(), self.published.get_or_create_owned(&labels));
        }
        if let Some(counter) = by_topic.get(topic) {
            counter.inc();
        }
        drop(by_topic);
        self.commit_to_ack.observe(commit_to_ack_seconds);
    }

    /// A batch spent `took` in `stage`.
    pub fn stage(&self, stage: Stage, took: Duration) {
        self.stages[stage as usize].observe(took.as_secs_f64());
    }

    /// A housekeeping turn truncated `truncated` partitions and put `busy` off.
    pub fn reclaimed(&self, truncated: usize, busy: usize) {
        self.reclaimed.inc_by(truncated as u64);
        self.reclaim_busy.inc_by(busy as u64);
    }

    pub fn set_backlog(&self, rows: i64, oldest_age_seconds: f64) {
        self.pending.set(rows);
        self.oldest_age.set(oldest_age_seconds);
        self.measured.store(true, Ordering::Relaxed);
    }

    /// The last wait for the synchronous standbys ended: `held`, past its bound.
    pub fn standby_waited(&self, held: bool) {
        if held {
            self.standby_holds.inc();
        }
        self.held_for_standby.store(held, Ordering::Relaxed);
    }

    /// Whether publishing is held because no synchronous standby has the rows read.
    pub fn held_for_standby(&self) -> bool {
        self.held_for_standby.load(Ordering::Relaxed)
    }

    /// The relay ran out of rows and sleeps on LISTEN.
    pub fn slept(&self) {
        self.sleeps.inc();
    }

    /// How often the relay has slept since start.
    pub fn sleeps(&self) -> u64 {
        self.sleeps.get()
    }

    /// Records how many lanes this instance publishes (0: none, standing by).
    pub fn set_lanes(&self, held: usize) {
        self.lanes.set(held as i64);
        self.active.set(i64::from(held > 0));
    }

    /// Whether this instance publishes any of the outbox's lanes right now.
    pub fn is_active(&self) -> bool {
        self.active.get() == 1
    }

    /// How many of the outbox's lanes this instance publishes right now.
    pub fn lanes_held(&self) -> i64 {
        self.lanes.get()
    }

    /// Events of this outbox published and acknowledged since start.
    pub fn published_count(&self) -> u64 {
        lock(&self.published_by_topic).values().map(Counter::get).sum()
    }

    /// (rows, oldest age in seconds) as last measured by this instance, if it ever led.
    pub fn backlog(&self) -> Option<(i64, f64)> {
        self.measured.load(Ordering::Relaxed).then(|| (self.pending.get(), self.oldest_age.get()))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
