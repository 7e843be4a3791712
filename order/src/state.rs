//! What the order service's request handlers share.

use std::sync::Arc;
use std::time::Duration;

use platform::db::PgPool;
use platform::readiness::Readiness;
use schema::topics::Topics;

use crate::admission::RateLimiter;
use crate::metrics::OrderMetrics;
use crate::waiters::Waiters;

pub struct AppState {
    pub pool: PgPool,
    pub topics: Topics,
    pub waiters: Arc<Waiters>,
    pub wait_budget: Duration,
    pub rate_limiter: RateLimiter,
    pub readiness: Arc<Readiness>,
    pub broker: platform::kafka::BrokerProbe,
    pub metrics: OrderMetrics,
    /// The consumer's group and what it assigned to this instance, for `/health`.
    pub consumer_group: String,
    pub group: Arc<platform::kafka::GroupContext>,
    /// The consumer's counts and lag, for `/health`.
    pub consumer_stats: messaging::metrics::ConsumerMetrics,
    /// Events failing now: `/health` is not ready while a partition is stuck behind one.
    pub stalls: Arc<messaging::inbox::Stalls>,
}
