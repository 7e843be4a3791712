//! HTTP routes of the inventory service: stock levels and health.

use actix_web::{HttpResponse, get, web};
use schema::Sku;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use platform::admin::Admin;

use crate::error::ApiError;
use crate::gremlin::Pattern;
use crate::state::AppState;
use crate::stock::{self, StockView};

/// Every product with its available stock.
#[utoipa::path(
    get,
    path = "/stock",
    responses((status = 200, body = [StockView]), (status = 503, description = "The database is not reachable", body = ErrorReply))
)]
#[get("")]
pub async fn list_stock(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut conn = state.pool.get().await?;
    Ok(HttpResponse::Ok().json(stock::list(&mut conn).await?))
}

/// One product's available stock.
#[utoipa::path(
    get,
    path = "/stock/{sku}",
    params(("sku" = String, Path, min_length = 2, max_length = 32, pattern = "^[A-Z0-9][A-Z0-9-]{1,31}$", description = "e.g. MUG-01")),
    responses(
        (status = 200, body = StockView),
        (status = 400, description = "Malformed sku", body = ErrorReply),
        (status = 404, description = "Unknown sku", body = ErrorReply),
        (status = 503, description = "The database is not reachable", body = ErrorReply)
    )
)]
#[get("/{sku}")]
pub async fn get_stock(sku: web::Path<String>, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let sku = Sku::parse(&sku).map_err(|e| ApiError::BadSku(e.to_string()))?;
    let mut conn = state.pool.get().await?;
    let view = stock::find(&mut conn, &sku).await?.ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok().json(view))
}

/// Holds a `/stock` reply when the gremlin's pattern makes its path slow.
pub async fn gremlin_delay(
    gremlin: std::sync::Arc<crate::gremlin::Gremlin>,
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    gremlin.strike(request.path()).await;
    next.call(request).await.map(ServiceResponse::map_into_boxed_body)
}

/// The body of `PUT /admin/products/{sku}`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewProduct {
    pub name: String,
    pub stock: i32,
}

/// `PUT /admin/products/{sku}` with `{"name": "...", "stock": N}`: adds a product to the
/// catalogue (201), or 409 if the SKU is already there. For test runs and demos that need
/// stock of their own (scripts/verify).
pub async fn add_product(
    _: Admin,
    state: web::Data<AppState>,
    sku: web::Path<String>,
    product: web::Json<NewProduct>,
) -> Result<HttpResponse, ApiError> {
    let sku = Sku::parse(&sku).map_err(|e| ApiError::BadSku(e.to_string()))?;
    let name = product.name.trim();
    // Postgres cannot store NUL, and no product name needs a control character.
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::InvalidName);
    }
    if !(0..=1_000_000_000).contains(&product.stock) {
        return Err(ApiError::InvalidStock);
    }
    let mut conn = state.pool.get().await?;
    if stock::add_product(&mut conn, &sku, name, product.stock).await? {
        Ok(HttpResponse::Created().json(stock::find(&mut conn, &sku).await?))
    } else {
        Err(ApiError::Exists(sku))
    }
}

/// `GET /admin/gremlin`: the current pattern and how often it struck.
pub async fn get_gremlin(_: Admin, state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(gremlin_body(&state))
}

/// `PUT /admin/gremlin` with a full pattern, e.g. `{"enabled": true, "one_in": 4, "delay_ms": 5000}`.
pub async fn put_gremlin(
    _: Admin,
    state: web::Data<AppState>,
    pattern: web::Json<Pattern>,
) -> Result<HttpResponse, ApiError> {
    pattern.validate().map_err(ApiError::InvalidPattern)?;
    state.gremlin.set(*pattern);
    Ok(HttpResponse::Ok().json(gremlin_body(&state)))
}

fn gremlin_body(state: &AppState) -> serde_json::Value {
    serde_json::json!({ "pattern": state.gremlin.pattern(), "delays": state.gremlin.delays() })
}

/// The body of every error answer (`platform::http::ErrorBody`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ErrorReply {
    /// A stable, machine-readable code, e.g. `invalid_sku`.
    error: String,
    /// What went wrong and what to do about it, for people.
    message: String,
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Inventory service", description = "Stock levels; reservations happen through events."),
    paths(list_stock, get_stock, messaging::service::health::live, messaging::service::health::ready)
)]
pub struct ApiDoc;
