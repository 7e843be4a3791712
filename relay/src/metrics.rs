//! The metrics of transactional messaging: what consumers did with events and how far
//! behind they are, and how the relay keeps up with the outbox.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;

use platform::metrics::{Metrics, latency_histogram};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub topic: String,
    /// processed, duplicate, failed or dead_lettered.
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub topic: String,
    pub partition: i32,
}

/// What an inbox consumer records.
#[derive(Clone, Default)]
pub struct ConsumerMetrics {
    events: Family<OutcomeLabels, Counter>,
    lag: Family<PartitionLabels, Gauge>,
}

impl ConsumerMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let this = Self::default();
        metrics.register("consumer_events", "Events a consumer finished with, by outcome", this.events.clone());
        metrics.register("consumer_lag_messages", "Messages on a partition not yet consumed", this.lag.clone());
        this
    }

    pub fn event(&self, topic: &str, outcome: &'static str) {
        self.events.get_or_create(&OutcomeLabels { topic: topic.to_owned(), outcome }).inc();
    }

    pub fn lag(&self, topic: &str, partition: i32, messages: i64) {
        self.lag.get_or_create(&PartitionLabels { topic: topic.to_owned(), partition }).set(messages);
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutboxLabels {
    pub outbox: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    pub topic: String,
}

/// What the relay records.
#[derive(Clone)]
pub struct RelayMetrics {
    published: Family<TopicLabels, Counter>,
    commit_to_ack: Family<OutboxLabels, Histogram>,
    pending: Family<OutboxLabels, Gauge>,
    oldest_age: Family<OutboxLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    active: Family<OutboxLabels, Gauge>,
}

impl RelayMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let this = Self {
            published: Family::default(),
            commit_to_ack: Family::new_with_constructor(latency_histogram),
            pending: Family::default(),
            oldest_age: Family::default(),
            active: Family::default(),
        };
        metrics.register(
            "relay_published_events",
            "Events published and acknowledged, by topic",
            this.published.clone(),
        );
        metrics.register_with_unit(
            "relay_commit_to_ack",
            "From the outbox row's commit to the broker's acknowledgement",
            Unit::Seconds,
            this.commit_to_ack.clone(),
        );
        metrics.register("outbox_pending_rows", "Outbox rows not yet published", this.pending.clone());
        metrics.register_with_unit(
            "outbox_oldest_pending_age",
            "Age of the oldest unpublished outbox row (0 when empty)",
            Unit::Seconds,
            this.oldest_age.clone(),
        );
        metrics.register("relay_active", "1 if this instance holds the outbox's leader lock", this.active.clone());
        this
    }

    pub fn published(&self, topic: &str, outbox: &str, commit_to_ack_seconds: f64) {
        self.published.get_or_create(&TopicLabels { topic: topic.to_owned() }).inc();
        self.commit_to_ack.get_or_create(&OutboxLabels { outbox: outbox.to_owned() }).observe(commit_to_ack_seconds);
    }

    pub fn backlog(&self, outbox: &str, rows: i64, oldest_age_seconds: f64) {
        let labels = OutboxLabels { outbox: outbox.to_owned() };
        self.pending.get_or_create(&labels).set(rows);
        self.oldest_age.get_or_create(&labels).set(oldest_age_seconds);
    }

    pub fn active(&self, outbox: &str, active: bool) {
        self.active.get_or_create(&OutboxLabels { outbox: outbox.to_owned() }).set(i64::from(active));
    }
}
