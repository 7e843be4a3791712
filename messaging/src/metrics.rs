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
