//! `/health/live` and `/health` of a consuming service: its database (required), the broker,
//! the consumer's progress and the background tasks, plus any optional dependency the service
//! names (notifications' SMTP server).

use std::sync::Arc;

use actix_web::{HttpResponse, get, web};
use futures::future::BoxFuture;
use platform::db::PgPool;
use platform::health::Check;
use platform::kafka::BrokerProbe;
use platform::readiness::Readiness;

use crate::inbox::ConsumerHealth;

/// Whether the service is ready while the broker is away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broker {
    /// Not ready without it (a service that only consumes has nothing to do).
    Required,
    /// Reported, not required (the order service still takes orders into its outbox).
    Optional,
}

/// A dependency the service reports but does not need to be ready.
pub type Probe = Arc<dyn Fn() -> BoxFuture<'static, Check> + Send + Sync>;

/// What the service's `/health` looks at.
pub struct Health {
    pub(super) database: String,
    pub(super) probe_sql: &'static str,
    pub(super) pool: PgPool,
    pub(super) readiness: Arc<Readiness>,
    pub(super) broker: BrokerProbe,
    pub(super) need_broker: Broker,
    pub(super) consumer: ConsumerHealth,
    pub(super) optional: Vec<Probe>,
}

impl Health {
    /// Every check, in the order `/health` lists them.
    pub async fn checks(&self) -> Vec<Check> {
        let database =
            platform::health::database_when_ready(&self.database, &self.readiness, &self.pool, self.probe_sql).await;
        let broker = platform::health::broker(&self.broker).await;
        let broker = if self.need_broker == Broker::Optional { broker.optional() } else { broker };
        let mut checks = vec![database, broker];
        for probe in &self.optional {
            checks.push(probe().await.optional());
        }
        checks.push(self.consumer.progress());
        checks.push(platform::health::background(&self.readiness));
        checks
    }

    /// The body `/health` sends (whatever its status): the checks and the consumer.
    pub async fn body(&self) -> serde_json::Value {
        let mut body = platform::health::body(&self.checks().await);
        if let Some(fields) = body.as_object_mut() {
            fields.insert("consumer".into(), self.consumer.body());
        }
        body
    }

    async fn response(&self) -> HttpResponse {
        let mut extra = serde_json::Map::new();
        extra.insert("consumer".into(), self.consumer.body());
        platform::health::response_with(&self.checks().await, extra)
    }
}

#[utoipa::path(responses((status = 200, description = "The process is running")))]
#[get("/health/live")]
pub async fn live() -> HttpResponse {
    platform::health::live()
}

/// Ready when the service's database answers a query against one of its own tables, the
/// broker answers (unless the service can do without it), no event is stuck and no
/// background task died; optional dependencies are reported beside.
#[utoipa::path(responses((status = 200, description = "Ready"), (status = 503, description = "A dependency is down")))]
#[get("/health")]
pub async fn ready(health: web::Data<Health>) -> HttpResponse {
    health.response().await
}
