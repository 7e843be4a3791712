//! What an inbox consumer did, kept once: the Prometheus families below are both what
//! `/metrics` shows and what tests and `/health` read.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use platform::metrics::Metrics;

/// How the consumer finished with one event.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // the label values Prometheus queries use
pub enum EventOutcome {
    processed,
    duplicate,
    /// Could not be applied; then dead-lettered, or redelivered after a restart if shutdown
    /// came first.
    failed,
    dead_lettered,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    topic: String,
    outcome: EventOutcome,
}

/// How a batch of events (one transaction) ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum BatchOutcome {
    committed,
    /// Something in it failed; its events were tried again alone.
    rolled_back,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BatchLabels {
    outcome: BatchOutcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    topic: String,
    partition: i32,
}

/// One consumer's counts by topic and outcome, and its lag by partition.
#[derive(Clone)]
pub struct ConsumerMetrics {
    topics: Arc<[String]>,
    events: Family<OutcomeLabels, Counter>,
    lag: Family<PartitionLabels, Gauge>,
    stalled: Family<PartitionLabels, Gauge>,
    /// Kafka clients replaced after librdkafka declared the one in use dead.
    renewals: Counter,
    /// Transactions of several events, by outcome, and the events they held.
    batches: Family<BatchLabels, Counter>,
    batched_events: Family<BatchLabels, Counter>,
    /// The lag gauges' latest values, for `/health` (a family cannot be read back as a whole).
    lags: Arc<Mutex<BTreeMap<(String, i32), i64>>>,
}

impl ConsumerMetrics {
    /// Counts for a consumer of `topics`, not yet shown on any `/metrics`.
    pub fn new(topics: &[&str]) -> Self {
        Self {
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            events: Family::default(),
            lag: Family::default(),
            stalled: Family::default(),
            renewals: Counter::default(),
            batches: Family::default(),
            batched_events: Family::default(),
            lags: Arc::default(),
        }
    }

    /// Shows these counts on `metrics`' `/metrics`.
    pub fn register(&self, metrics: &Metrics) {
        metrics.register("consumer_events", "Events a consumer finished with, by outcome", self.events.clone());
        metrics.register("consumer_lag_messages", "Messages on a partition not yet consumed", self.lag.clone());
        metrics.register(
            "consumer_stalled_seconds",
            "How long a partition's oldest failing event has been failing (0: none is)",
            self.stalled.clone(),
        );
        metrics.register(
            "consumer_renewals",
            "Kafka consumers replaced in the running process after librdkafka declared theirs dead",
            self.renewals.clone(),
        );
        metrics.register(
            "consumer_batches",
            "Transactions that applied a batch of events, by outcome (rolled_back: its events were tried alone)",
            self.batches.clone(),
        );
        metrics.register(
            "consumer_batched_events",
            "Events in those transactions, by the batch's outcome",
            self.batched_events.clone(),
        );
    }

    pub fn event(&self, topic: &str, outcome: EventOutcome) {
        self.events.get_or_create(&OutcomeLabels { topic: topic.to_owned(), outcome }).inc();
    }

    pub fn lag(&self, topic: &str, partition: i32, messages: i64) {
        self.lag.get_or_create(&PartitionLabels { topic: topic.to_owned(), partition }).set(messages);
        self.lags.lock().unwrap_or_else(PoisonError::into_inner).insert((topic.to_owned(), partition), messages);
    }

    pub fn stalled(&self, topic: &str, partition: i32, seconds: i64) {
        self.stalled.get_or_create(&PartitionLabels { topic: topic.to_owned(), partition }).set(seconds);
    }

    /// Events that ended with `outcome`, over all the consumer's topics.
    pub fn count(&self, outcome: EventOutcome) -> u64 {
        self.topics
            .iter()
            .filter_map(|topic| self.events.get(&OutcomeLabels { topic: topic.clone(), outcome }).map(|c| c.get()))
            .sum()
    }

    pub fn processed(&self) -> u64 {
        self.count(EventOutcome::processed)
    }
    pub fn duplicates(&self) -> u64 {
        self.count(EventOutcome::duplicate)
    }
    pub fn failed(&self) -> u64 {
        self.count(EventOutcome::failed)
    }
    pub fn dead_lettered(&self) -> u64 {
        self.count(EventOutcome::dead_lettered)
    }

    /// A batch of `events` committed, or rolled back.
    pub fn batch(&self, events: usize, committed: bool) {
        let labels =
            BatchLabels { outcome: if committed { BatchOutcome::committed } else { BatchOutcome::rolled_back } };
        self.batches.get_or_create(&labels).inc();
        self.batched_events.get_or_create(&labels).inc_by(events as u64);
    }

    /// Batches that ended with `outcome`, and the events they held.
    pub fn batches(&self, outcome: BatchOutcome) -> (u64, u64) {
        let labels = BatchLabels { outcome };
        let count = |family: &Family<BatchLabels, Counter>| family.get(&labels).map_or(0, |c| c.get());
        (count(&self.batches), count(&self.batched_events))
    }

    pub fn renewed(&self) {
        self.renewals.inc();
    }
    pub fn renewals(&self) -> u64 {
        self.renewals.get()
    }

    /// Messages not yet consumed, over every partition measured (partitions this instance
    /// held last).
    pub fn lag_total(&self) -> i64 {
        self.lags.lock().unwrap_or_else(PoisonError::into_inner).values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::{ConsumerMetrics, EventOutcome};

    #[test]
    fn counts_add_up_over_the_consumers_topics_only() {
        let metrics = ConsumerMetrics::new(&["a", "b"]);
        metrics.event("a", EventOutcome::processed);
        metrics.event("b", EventOutcome::processed);
        metrics.event("b", EventOutcome::duplicate);
        metrics.event("elsewhere", EventOutcome::processed);
        assert_eq!((metrics.processed(), metrics.duplicates(), metrics.failed()), (2, 1, 0));
    }
}
