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
    /// The consumer's group, partitions, lag and stuck events, for `/health`.
    pub consumer: messaging::inbox::ConsumerHealth,
}
