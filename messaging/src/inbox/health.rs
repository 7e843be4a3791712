//! What a service's `/health` says about its inbox consumer, from the consumer itself.

use std::sync::Arc;

use rdkafka::consumer::Consumer as _;

use super::{CurrentConsumer, Stalls};
use crate::metrics::ConsumerMetrics;

/// A cheap handle on a consumer's state for `/health` (made by `InboxConsumer::health`).
#[derive(Clone)]
pub struct ConsumerHealth {
    pub(super) group: String,
    pub(super) consumer: Arc<CurrentConsumer>,
    pub(super) stalls: Arc<Stalls>,
    pub(super) metrics: ConsumerMetrics,
}

impl ConsumerHealth {
    /// The "consumer progress" check: not ready while a partition is stuck behind an event.
    pub fn progress(&self) -> platform::health::Check {
        self.stalls.check()
    }

    /// Its group, partitions and whether it is paused (`platform::health::consumer`), plus its
    /// lag, what it applied, recognised as already applied, and dead-lettered.
    pub fn body(&self) -> serde_json::Value {
        let mut body = platform::health::consumer(&self.group, self.consumer.get().context());
        if let Some(body) = body.as_object_mut() {
            body.insert("lag".into(), self.metrics.lag_total().into());
            body.insert("dead_lettered".into(), self.metrics.dead_lettered().into());
            body.insert("processed".into(), self.metrics.processed().into());
            body.insert("duplicates".into(), self.metrics.duplicates().into());
            body.insert("renewals".into(), self.metrics.renewals().into());
        }
        body
    }
}
