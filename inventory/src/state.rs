//! What the inventory service's request handlers share.

use std::sync::Arc;

use platform::db::PgPool;
use platform::readiness::Readiness;

use crate::gremlin::Gremlin;

pub struct AppState {
    pub pool: PgPool,
    pub gremlin: Arc<Gremlin>,
    pub readiness: Arc<Readiness>,
    pub broker: platform::kafka::BrokerProbe,
    /// The consumer's group and what it assigned to this instance, for `/health`.
    pub consumer_group: String,
    pub group: Arc<platform::kafka::GroupContext>,
    /// The consumer's counts and lag, for `/health`.
    pub consumer_stats: messaging::metrics::ConsumerMetrics,
    /// Events failing now: `/health` is not ready while a partition is stuck behind one.
    pub stalls: Arc<messaging::inbox::Stalls>,
}
