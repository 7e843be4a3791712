//! `/health/live` (the process answers) and `/health` (ready: its database answers).

use actix_web::{HttpResponse, get, web};

use crate::state::AppState;

#[utoipa::path(responses((status = 200, description = "The process is running")))]
#[get("/health/live")]
pub async fn live() -> HttpResponse {
    platform::health::live()
}

/// Ready when the order database answers a query against the orders table.
#[utoipa::path(responses((status = 200, description = "Ready"), (status = 503, description = "A dependency is down")))]
#[get("/health")]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let mut extra = serde_json::Map::new();
    extra.insert("consumer".into(), state.consumer.body());
    platform::health::response_with(&checks(&state).await, extra)
}

/// The order database (required), the broker (optional), the consumer's progress and the
/// background tasks.
pub async fn checks(state: &AppState) -> Vec<platform::health::Check> {
    let database = platform::health::database_when_ready(
        "order database",
        &state.readiness,
        &state.pool,
        "SELECT 1 FROM orders LIMIT 1",
    )
    .await;
    // Orders are still accepted into the outbox while the broker is away.
    let kafka = platform::health::broker(&state.broker).await.optional();
    vec![database, kafka, state.consumer.progress(), platform::health::background(&state.readiness)]
}
