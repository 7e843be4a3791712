//! `/orders`: place, read, list, cancel and ship orders.
//!
//! One room, over 300 lines: the five handlers share the wait for a change, the reply's
//! headers and the write's acknowledgement rules; their OpenAPI text is most of the length.

use std::time::{Duration, Instant};

use actix_web::http::header::{self, HeaderMap};
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use messaging::outbox::Outbox;
use schema::OrderId;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Customer, Fulfilment};
use crate::domain::{OrderStatus, PlaceOrder};
use crate::error::ApiError;
use crate::repository::{self, Cancellation, Placement, ShipRequest};
use crate::state::AppState;
use crate::view::OrderView;

/// The body of `POST /orders` (documentation; the handler validates field by field).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PlaceOrderRequest {
    /// Optional: the token says who the customer is. If given, it must be the token's subject.
    #[schema(pattern = "^[A-Za-z0-9._@-]{1,64}$", min_length = 1, max_length = 64)]
    customer_id: Option<String>,
    /// 1 to 100 lines, each SKU at most once.
    #[schema(min_items = 1, max_items = 100)]
    lines: Vec<PlaceOrderLine>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PlaceOrderLine {
    /// e.g. MUG-01: 2 to 32 characters of A-Z, 0-9 and '-', starting with a letter or digit.
    #[schema(pattern = "^[A-Z0-9][A-Z0-9-]{1,31}$", min_length = 2, max_length = 32, example = "MUG-01")]
    sku: String,
    /// 1 to 10000.
    #[schema(minimum = 1, maximum = 10000)]
    quantity: i32,
}

/// Places an order for the authenticated customer. The order is written with an `OrderPlaced` event in one transaction;
/// then the request waits up to its budget (default 2 s, `Prefer: wait=N` for less) for
/// inventory's decision.
#[utoipa::path(
    post,
    path = "/orders",
    request_body = PlaceOrderRequest,
    security(("customer_token" = [])),
    params(
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 255, pattern = "^[!-~]{1,255}$",
            description = "Unique per order among the customer's orders; resend it to retry safely (1 to 255 visible ASCII characters)"),
        ("Prefer" = Option<String>, Header, description = "wait=N: wait at most N seconds for the outcome (RFC 7240)"),
    ),
    responses(
        (status = 201, description = "Decided within the wait: CONFIRMED or REJECTED", body = OrderView),
        (status = 202, description = "Accepted and safe, still PENDING; follow Location", body = OrderView),
        (status = 400, description = "Invalid body (`fields` names each problem) or missing Idempotency-Key", body = crate::openapi::ErrorReply),
        (status = 401, description = "Missing, expired or invalid token; see WWW-Authenticate", body = crate::openapi::ErrorReply),
        (status = 409, description = "Idempotency-Key already used by this customer for a different request", body = crate::openapi::ErrorReply),
        (status = 429, description = "Too many orders from this customer; see Retry-After", body = crate::openapi::ErrorReply),
        (status = 503, description = "Overloaded, the database is not reachable, or the order is not yet held by a synchronous standby (`not_yet_durable`: send it again unchanged); see Retry-After", body = crate::openapi::ErrorReply),
    )
)]
#[post("")]
pub async fn place_order(
    customer: Customer,
    request: HttpRequest,
    body: web::Json<platform::json::StrictValue>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let key = idempotency_key(&request)?;
    let order = PlaceOrder::parse(&body, customer.id()).map_err(ApiError::Validation)?;
    state
        .rate_limiter
        .admit(&order.customer_id, started)
        .map_err(|retry_after| ApiError::RateLimited { customer: order.customer_id.clone(), retry_after })?;
    let (budget, preference) = wait_budget(request.headers(), state.wait_budget);
    let trace = platform::http::trace_of(request.headers());

    let id = OrderId::new();
    // Registered before the write, so that a decision committed at any moment wakes us.
    let mut waiter = state.waiters.register(id.0);
    let placement = {
        // Never queue for a connection past the budget (or a short floor, for `wait=0`).
        let within = budget.max(ACCEPT_WAIT_FLOOR).saturating_sub(started.elapsed());
        let mut conn = platform::db::get_within(&state.pool, within).await?;
        let placement =
            repository::place(&mut conn, id, key, &order, Outbox::new(&state.topics.orders, &trace)).await?;
        state.held_by_standbys(&mut conn, within).await?;
        placement
    };
    platform::crash::point(crate::AFTER_COMMIT_BEFORE_REPLY)?;
    let (view, replayed) = match placement {
        Placement::Created(view) => {
            state.metrics.accepted();
            tracing::info!(order_id = %view.id, correlation_id = %view.correlation_id, "order accepted");
            (view, false)
        }
        Placement::Replayed(view) if is_settled(&view) => (view, true),
        Placement::Replayed(view) => {
            // A decision committed between that read and this registration would wake no
            // one: read once more after registering.
            waiter = state.waiters.register(view.id);
            (reread(&state, view.id, Duration::from_secs(1)).await.unwrap_or(view), true)
        }
        Placement::KeyReused { existing } => return Err(ApiError::KeyReused { existing: existing.0 }),
    };
    let view = wait_for(&state, waiter, view, started, budget, is_settled).await;
    Ok(reply(view, replayed, preference))
}

/// Re-reads the order each time its status changes, until `done` holds or the budget
/// (counted from `started`) is spent. The wait ends early enough for the last re-read to fit
/// inside the budget: a client that asked for N seconds has its answer by then, even on a
/// busy machine. `waiter` must have been registered before `view` was read.
#[tracing::instrument(name = "order.wait", skip_all, fields(order_id = %view.id))]
async fn wait_for(
    state: &AppState,
    mut waiter: crate::waiters::Waiter,
    mut view: OrderView,
    started: Instant,
    budget: Duration,
    done: impl Fn(&OrderView) -> bool,
) -> OrderView {
    let wait_until = budget.saturating_sub(REREAD_MARGIN);
    while !done(&view) {
        let remaining = wait_until.saturating_sub(started.elapsed());
        if remaining.is_zero() {
            break;
        }
        waiter.changed_within(remaining).await;
        let remaining = budget.saturating_sub(started.elapsed()).max(REREAD_FLOOR);
        view = reread(state, view.id, remaining).await.unwrap_or(view);
    }
    view
}

/// The part of a request's budget kept for re-reading the order after the wait.
const REREAD_MARGIN: Duration = Duration::from_millis(100);

/// The least time a re-read gets, even when the budget is spent.
const REREAD_FLOOR: Duration = Duration::from_millis(20);

/// How long a request that asked not to wait (`Prefer: wait=0`) may still wait for a
/// database connection to write its order.
const ACCEPT_WAIT_FLOOR: Duration = Duration::from_millis(500);

/// Reads the order again, giving up after `within`.
async fn reread(state: &AppState, id: uuid::Uuid, within: Duration) -> Option<OrderView> {
    let read = async {
        let mut conn = state.pool.get().await.ok()?;
        repository::find(&mut conn, OrderId(id)).await.ok().flatten()
    };
    tokio::time::timeout(within, read).await.ok().flatten()
}

fn is_settled(view: &OrderView) -> bool {
    view.status.is_settled()
}

/// The budget for this request: the configured one, or less if the client prefers
/// (`Prefer: wait=N`, N in seconds). Returns the preference to echo in `Preference-Applied`.
fn wait_budget(headers: &HeaderMap, configured: Duration) -> (Duration, Option<String>) {
    let asked = headers
        .get_all("prefer")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .filter_map(|token| token.trim().strip_prefix("wait="))
        .find_map(|n| n.trim().parse::<f64>().ok().filter(|n| n.is_finite() && *n >= 0.0));
    match asked {
        Some(seconds) => {
            // Clamped before it becomes a Duration: `wait=1e20` is a long wait, not a panic.
            let budget = Duration::from_secs_f64(seconds.min(configured.as_secs_f64()));
            (budget, Some(format!("wait={}", budget.as_secs_f64())))
        }
        None => (configured, None),
    }
}

/// What `POST /orders` answers: the order, and for a pending one a word for the shopper.
#[derive(Serialize)]
struct Placed {
    #[serde(flatten)]
    order: OrderView,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

/// The headers of an answer about `view` to a request with an Idempotency-Key: where to follow
/// the order, whether this was a retry, and the wait applied.
fn describe(
    response: &mut actix_web::HttpResponseBuilder,
    view: &OrderView,
    replayed: bool,
    preference: Option<String>,
) {
    response.insert_header((header::LOCATION, format!("/orders/{}", view.id)));
    if replayed {
        response.insert_header(("Idempotent-Replayed", "true"));
    }
    if let Some(preference) = preference {
        response.insert_header(("Preference-Applied", preference));
    }
}

fn reply(view: OrderView, replayed: bool, preference: Option<String>) -> HttpResponse {
    let mut response = if is_settled(&view) { HttpResponse::Created() } else { HttpResponse::Accepted() };
    describe(&mut response, &view, replayed, preference);
    let message = (view.status == OrderStatus::Pending).then(|| {
        format!(
            "Your order is safely recorded. Inventory is taking longer than usual to confirm it; it will \
             complete on its own, so there is no need to order again. Follow its status at /orders/{}.",
            view.id
        )
    });
    response.json(Placed { order: view, message })
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

/// One of the customer's orders with its lines and full status history.
///
/// Following an order without polling: send the `ETag` of what you have in `If-None-Match`
/// and `Prefer: wait=N` (at most 30 s). The answer comes as soon as the order's status
/// changes (`200`), or after N seconds with `304 Not Modified`. With `Prefer: wait=N` and no
/// `If-None-Match`, it comes once the order is final or N seconds have passed.
#[utoipa::path(
    get,
    path = "/orders/{id}",
    params(
        ("id" = uuid::Uuid, Path, description = "Order id"),
        ("If-None-Match" = Option<String>, Header, description = "The ETag you have: 304 while it is still current"),
        ("Prefer" = Option<String>, Header, description = "wait=N: wait up to N seconds (at most 30) for a change (RFC 7240)"),
    ),
    security(("customer_token" = [])),
    responses(
        (status = 200, body = OrderView, headers(("ETag" = String, description = "Changes with every status change"))),
        (status = 304, description = "Not modified: the status is still the one your ETag names"),
        (status = 400, description = "The id is not a UUID", body = crate::openapi::ErrorReply),
        (status = 401, description = "Missing, expired or invalid token", body = crate::openapi::ErrorReply),
        (status = 404, description = "No such order among this customer's", body = crate::openapi::ErrorReply),
        (status = 429, description = "This customer already has as many requests waiting as it may (`too_many_waiting`); see Retry-After", body = crate::openapi::ErrorReply),
        (status = 503, description = "The database is not reachable", body = crate::openapi::ErrorReply),
    )
)]
#[get("/{id}")]
pub async fn get_order(
    customer: Customer,
    request: HttpRequest,
    id: web::Path<uuid::Uuid>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let (budget, preference) = wait_budget(request.headers(), FOLLOW_WAIT_MAX);
    let known = if_none_match(request.headers());
    // A follower holds an in-flight slot for up to 30 s: each customer may have only so many.
    let _place = preference
        .as_ref()
        .map(|_| {
            state
                .waiting
                .enter(customer.id())
                .ok_or_else(|| ApiError::TooManyWaiting { customer: customer.id().into() })
        })
        .transpose()?;
    // Registered before the read, so that a change committed at any moment wakes us.
    let waiter = preference.is_some().then(|| state.waiters.register(*id));
    let view = {
        // Not held while waiting: a follower must not keep a pool connection.
        let mut conn = state.pool.get().await?;
        repository::find_for(&mut conn, OrderId(*id), customer.id()).await?.ok_or(ApiError::NotFound)?
    };
    let view = match waiter {
        Some(waiter) => {
            let changed = |view: &OrderView| match &known {
                Some(tags) => !matches_any(tags, &etag(view)),
                None => is_settled(view),
            };
            wait_for(&state, waiter, view, started, budget, changed).await
        }
        None => view,
    };
    let tag = etag(&view);
    let unchanged = known.as_ref().is_some_and(|tags| matches_any(tags, &tag));
    let mut response = if unchanged { HttpResponse::NotModified() } else { HttpResponse::Ok() };
    response.insert_header((header::ETAG, tag));
    if let Some(preference) = preference {
        response.insert_header(("Preference-Applied", preference));
    }
    Ok(if unchanged { response.finish() } else { response.json(view) })
}

/// The longest a `GET /orders/{id}` may wait for a change.
const FOLLOW_WAIT_MAX: Duration = Duration::from_secs(30);

/// An order's entity tag: its place in its own history, which every status change extends.
fn etag(view: &OrderView) -> String {
    format!("\"{}-{}\"", view.history.len(), view.status)
}

/// Whether `tag` is among `tags`, where `*` matches any (RFC 9110 13.1.2): the order exists,
/// so `If-None-Match: *` is answered 304.
fn matches_any(tags: &[String], tag: &str) -> bool {
    tags.iter().any(|t| t == tag || t == "*")
}

/// The entity tags of `If-None-Match`, if any.
fn if_none_match(headers: &HeaderMap) -> Option<Vec<String>> {
    let tags: Vec<String> = headers
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/").to_owned())
        .filter(|tag| !tag.is_empty())
        .collect();
    (!tags.is_empty()).then_some(tags)
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// How many orders, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
}

/// The customer's most recent orders, newest first.
#[utoipa::path(
    get,
    path = "/orders",
    params(ListQuery),
    security(("customer_token" = [])),
    responses(
        (status = 200, body = [OrderView]),
        (status = 400, description = "limit is not an integer from 1 to 100", body = crate::openapi::ErrorReply),
        (status = 401, description = "Missing, expired or invalid token", body = crate::openapi::ErrorReply),
        (status = 503, description = "The database is not reachable", body = crate::openapi::ErrorReply),
    )
)]
#[get("")]
pub async fn list_orders(
    customer: Customer,
    query: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::InvalidQuery(format!("limit must be an integer from 1 to 100, not {limit}")));
    }
    let mut conn = state.pool.get().await?;
    Ok(HttpResponse::Ok().json(repository::recent(&mut conn, customer.id(), limit).await?))
}

/// Cancels a pending or confirmed order: inventory releases its stock and the order ends
/// CANCELLED. Cancelling an order that is already being cancelled is harmless. Once shipping
/// has started (SHIPPING, SHIPPED) the answer is a 409.
#[utoipa::path(
    post,
    path = "/orders/{id}/cancel",
    params(("id" = uuid::Uuid, Path, description = "Order id")),
    security(("customer_token" = [])),
    responses(
        (status = 202, description = "Cancellation under way", body = OrderView),
        (status = 400, description = "The id is not a UUID", body = crate::openapi::ErrorReply),
        (status = 401, description = "Missing, expired or invalid token", body = crate::openapi::ErrorReply),
        (status = 404, description = "No such order among this customer's", body = crate::openapi::ErrorReply),
        (status = 409, description = "Rejected, already cancelled, or shipping has started (`not_cancellable`)", body = crate::openapi::ErrorReply),
        (status = 503, description = "The database is not reachable, or the cancellation is not yet held by a synchronous standby (`not_yet_durable`: send it again)", body = crate::openapi::ErrorReply),
    )
)]
#[post("/{id}/cancel")]
pub async fn cancel_order(
    customer: Customer,
    request: HttpRequest,
    id: web::Path<uuid::Uuid>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let trace = platform::http::trace_of(request.headers());
    let mut conn = state.pool.get().await?;
    let cancellation =
        repository::cancel(&mut conn, OrderId(*id), customer.id(), Outbox::new(&state.topics.orders, &trace)).await?;
    state.held_by_standbys(&mut conn, state.wait_budget).await?;
    match cancellation {
        Cancellation::Requested(view) | Cancellation::AlreadyRequested(view) => Ok(HttpResponse::Accepted().json(view)),
        Cancellation::NotCancellable(status) => Err(ApiError::NotCancellable(status)),
        Cancellation::NotFound => Err(ApiError::NotFound),
    }
}

/// Ships a confirmed order (a fulfilment operator's call: the token must grant `orders:ship`).
/// The order moves to SHIPPING with an `OrderReadyToShip` event in one transaction; inventory
/// takes its reserved units out of the warehouse and the order ends SHIPPED. The request waits
/// up to its budget (`Prefer: wait=N` for less) for that. A second request, with any key, is
/// a no-op answered with the order as it is; a retry with the same key says
/// `Idempotent-Replayed: true`.
#[utoipa::path(
    post,
    path = "/orders/{id}/ship",
    params(
        ("id" = uuid::Uuid, Path, description = "Order id"),
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 255, pattern = "^[!-~]{1,255}$",
            description = "Resend it to retry safely (1 to 255 visible ASCII characters)"),
        ("Prefer" = Option<String>, Header, description = "wait=N: wait at most N seconds for SHIPPED (RFC 7240)"),
    ),
    security(("operator_token" = [])),
    responses(
        (status = 200, description = "SHIPPED: the stock left the warehouse", body = OrderView),
        (status = 202, description = "SHIPPING: inventory has not answered within the wait; follow Location", body = OrderView),
        (status = 400, description = "The id is not a UUID, or the Idempotency-Key is missing", body = crate::openapi::ErrorReply),
        (status = 401, description = "Missing, expired or invalid token", body = crate::openapi::ErrorReply),
        (status = 403, description = "The token does not grant orders:ship (`insufficient_scope`)", body = crate::openapi::ErrorReply),
        (status = 404, description = "No such order", body = crate::openapi::ErrorReply),
        (status = 409, description = "Not CONFIRMED: still pending, rejected, or cancelled (`not_shippable`)", body = crate::openapi::ErrorReply),
        (status = 503, description = "The database is not reachable, or the request is not yet held by a synchronous standby (`not_yet_durable`: send it again unchanged); see Retry-After", body = crate::openapi::ErrorReply),
    )
)]
#[post("/{id}/ship")]
pub async fn ship_order(
    operator: Fulfilment,
    request: HttpRequest,
    id: web::Path<uuid::Uuid>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let key = idempotency_key(&request)?;
    let (budget, preference) = wait_budget(request.headers(), state.wait_budget);
    let trace = platform::http::trace_of(request.headers());
    // Registered before the write, so that inventory's answer committed at any moment wakes us.
    let waiter = state.waiters.register(*id);
    let outcome = {
        let within = budget.max(ACCEPT_WAIT_FLOOR).saturating_sub(started.elapsed());
        let mut conn = platform::db::get_within(&state.pool, within).await?;
        let outcome = repository::ship(&mut conn, OrderId(*id), key, Outbox::new(&state.topics.orders, &trace)).await?;
        state.held_by_standbys(&mut conn, within).await?;
        outcome
    };
    platform::crash::point(crate::SHIP_AFTER_COMMIT_BEFORE_REPLY)?;
    let (view, replayed) = match outcome {
        ShipRequest::Requested(view) => {
            state.metrics.ship_requested();
            tracing::info!(order_id = %view.id, operator = operator.operator(), "shipping started");
            (view, false)
        }
        ShipRequest::AlreadyRequested { view, replayed } => (view, replayed),
        ShipRequest::NotShippable(status) => return Err(ApiError::NotShippable(status)),
        ShipRequest::NotFound => return Err(ApiError::NotFound),
    };
    let view = wait_for(&state, waiter, view, started, budget, is_settled).await;
    let mut response = if view.status == OrderStatus::Shipping { HttpResponse::Accepted() } else { HttpResponse::Ok() };
    describe(&mut response, &view, replayed, preference);
    Ok(response.json(view))
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderName, HeaderValue};

    use super::*;

    fn prefer(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(HeaderName::from_static("prefer"), HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn a_client_may_shorten_the_wait_but_never_lengthen_it() {
        let two = Duration::from_secs(2);
        assert_eq!(wait_budget(&HeaderMap::new(), two), (two, None));
        assert_eq!(wait_budget(&prefer("wait=0"), two).0, Duration::ZERO);
        assert_eq!(wait_budget(&prefer("respond-async, wait=1"), two).0, Duration::from_secs(1));
        assert_eq!(wait_budget(&prefer("wait=30"), two).0, two);
        assert_eq!(wait_budget(&prefer("wait=soon"), two), (two, None));
        assert_eq!(wait_budget(&prefer("wait=-1"), two), (two, None));
        assert_eq!(wait_budget(&prefer("wait=1e20"), two), (two, Some("wait=2".to_string())));
        assert_eq!(wait_budget(&prefer("wait=1e400"), two), (two, None));
    }
}
