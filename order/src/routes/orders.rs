//! `/orders`: place, read, list and cancel orders.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use schema::OrderId;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::domain::PlaceOrder;
use crate::error::ApiError;
use crate::repository::{self, Cancellation, Placement};
use crate::startup::AppState;
use crate::view::OrderView;

/// The body of `POST /orders` (documentation; the handler validates field by field).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PlaceOrderRequest {
    /// 1 to 64 characters of letters, digits, '-', '_', '.', '@'.
    customer_id: String,
    /// 1 to 100 lines, each SKU at most once.
    lines: Vec<PlaceOrderLine>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PlaceOrderLine {
    /// e.g. MUG-01: 2 to 32 characters of A-Z, 0-9 and '-'.
    sku: String,
    /// 1 to 10000.
    quantity: i32,
}

/// Places an order. The order is written with an `OrderPlaced` event in one transaction;
/// inventory confirms or rejects it asynchronously.
#[utoipa::path(
    request_body = PlaceOrderRequest,
    params(("Idempotency-Key" = String, Header, description = "Unique per order; resend it to retry safely")),
    responses(
        (status = 202, description = "Accepted; follow Location for the outcome", body = OrderView),
        (status = 400, description = "Invalid body or missing Idempotency-Key"),
        (status = 409, description = "Idempotency-Key already used for a different request"),
    )
)]
#[post("/orders")]
pub async fn place_order(
    request: HttpRequest,
    body: web::Json<serde_json::Value>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&request)?;
    let order = PlaceOrder::parse(&body).map_err(ApiError::Validation)?;
    let trace = platform::http::trace_of(request.headers());
    let mut conn = state.pool.get().await?;
    match repository::place(&mut conn, key, &order, &trace, &state.topics.orders).await? {
        Placement::Created(view) => {
            tracing::info!(order_id = %view.id, correlation_id = %view.correlation_id, "order accepted");
            Ok(accepted(&view, false))
        }
        Placement::Replayed(view) => Ok(accepted(&view, true)),
        Placement::KeyReused { existing } => Err(ApiError::KeyReused { existing: existing.0 }),
    }
}

fn accepted(view: &OrderView, replayed: bool) -> HttpResponse {
    let mut response = HttpResponse::Accepted();
    response.insert_header((header::LOCATION, format!("/orders/{}", view.id)));
    if replayed {
        response.insert_header(("Idempotent-Replayed", "true"));
    }
    response.json(view)
}

fn idempotency_key(request: &HttpRequest) -> Result<&str, ApiError> {
    request
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|key| (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or(ApiError::IdempotencyKey)
}

/// One order with its lines and full status history.
#[utoipa::path(
    params(("id" = uuid::Uuid, Path, description = "Order id")),
    responses((status = 200, body = OrderView), (status = 404, description = "No such order"))
)]
#[get("/orders/{id}")]
pub async fn get_order(id: web::Path<uuid::Uuid>, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut conn = state.pool.get().await?;
    let view = repository::find(&mut conn, OrderId(*id)).await?.ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok().json(view))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// How many orders, 1 to 100 (default 20).
    limit: Option<i64>,
}

/// The most recent orders, newest first.
#[utoipa::path(params(ListQuery), responses((status = 200, body = [OrderView]), (status = 400, description = "Bad limit")))]
#[get("/orders")]
pub async fn list_orders(query: web::Query<ListQuery>, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        let mut fields = crate::domain::FieldErrors::new();
        fields.insert("limit".into(), "must be between 1 and 100".into());
        return Err(ApiError::Validation(fields));
    }
    let mut conn = state.pool.get().await?;
    Ok(HttpResponse::Ok().json(repository::recent(&mut conn, limit).await?))
}

/// Cancels a pending or confirmed order: inventory releases its stock and the order ends
/// CANCELLED. Cancelling an order that is already being cancelled is harmless.
#[utoipa::path(
    params(("id" = uuid::Uuid, Path, description = "Order id")),
    responses(
        (status = 202, description = "Cancellation under way", body = OrderView),
        (status = 404, description = "No such order"),
        (status = 409, description = "Rejected or already cancelled"),
    )
)]
#[post("/orders/{id}/cancel")]
pub async fn cancel_order(
    request: HttpRequest,
    id: web::Path<uuid::Uuid>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let trace = platform::http::trace_of(request.headers());
    let mut conn = state.pool.get().await?;
    match repository::cancel(&mut conn, OrderId(*id), &trace, &state.topics.orders).await? {
        Cancellation::Requested(view) | Cancellation::AlreadyRequested(view) => Ok(HttpResponse::Accepted().json(view)),
        Cancellation::NotCancellable(status) => Err(ApiError::NotCancellable(status)),
        Cancellation::NotFound => Err(ApiError::NotFound),
    }
}
