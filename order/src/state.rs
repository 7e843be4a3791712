//! What the order service's request handlers share.

use std::sync::Arc;
use std::time::Duration;

use platform::db::PgPool;
use platform::readiness::Readiness;
use schema::topics::Topics;

use crate::admission::{RateLimiter, WaitingCap};
use crate::metrics::OrderMetrics;
use crate::waiters::Waiters;

pub struct AppState {
    pub pool: PgPool,
    pub topics: Topics,
    pub waiters: Arc<Waiters>,
    pub wait_budget: Duration,
    pub rate_limiter: RateLimiter,
    pub waiting: Arc<WaitingCap>,
    pub readiness: Arc<Readiness>,
    pub broker: platform::kafka::BrokerProbe,
    pub metrics: OrderMetrics,
    /// The consumer's group, partitions, lag and stuck events, for `/health`.
    pub consumer: messaging::inbox::ConsumerHealth,
}
