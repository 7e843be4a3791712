//! What the order service's request handlers share.

use std::sync::Arc;
use std::time::Duration;

use platform::db::PgPool;
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
    pub metrics: OrderMetrics,
    /// What a write waits for before it is acknowledged (decision 0030, rule 1).
    pub standbys: platform::standby::StandbyWait,
}

impl AppState {
    /// Returns once the synchronous standbys hold every commit `conn` made, waiting at most
    /// the configured bound or `within`, whichever is shorter: a write is acknowledged only
    /// then (decision 0030, rule 1).
    pub async fn held_by_standbys(
        &self,
        conn: &mut diesel_async::AsyncPgConnection,
        within: Duration,
    ) -> Result<(), platform::standby::WaitError> {
        let wait = platform::standby::StandbyWait { bound: self.standbys.bound.min(within), ..self.standbys };
        wait.until_committed_held(conn).await.map(drop)
    }
}
