//! What the inventory service's request handlers share.

use std::sync::Arc;

use platform::db::PgPool;

use crate::gremlin::Gremlin;

pub struct AppState {
    pub pool: PgPool,
    pub gremlin: Arc<Gremlin>,
}
