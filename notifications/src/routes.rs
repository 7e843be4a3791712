//! HTTP routes of the notifications service: what was sent for an order (`/health` is the
//! skeleton's: `messaging::service::health`).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, get, web};
use platform::db::PgPool;
use platform::http::error_response;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::Customer;
use crate::store::{self, NotificationView};

/// What the request handlers share.
pub struct AppState {
    pub pool: PgPool,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ForOrder {
    /// The order whose messages to show.
    pub order_id: Uuid,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderNotifications {
    pub order_id: Uuid,
    /// Oldest first: one per outcome (`CONFIRMED`, `REJECTED`, `CANCELLED`), each with
    /// whether and when it was sent.
    pub notifications: Vec<NotificationView>,
}

/// The messages owed and sent about one of the caller's orders.
#[utoipa::path(
    get,
    path = "/notifications",
    params(ForOrder),
    security(("customer" = [])),
    responses(
        (status = 200, body = OrderNotifications),
        (status = 400, description = "order_id missing or not a UUID"),
        (status = 401, description = "No valid customer token"),
        (status = 404, description = "No order of the caller's with this id has reached this service"),
        (status = 503, description = "The database is not reachable")
    )
)]
#[get("/notifications")]
pub async fn for_order(customer: Customer, query: web::Query<ForOrder>, state: web::Data<AppState>) -> HttpResponse {
    let order_id = query.order_id;
    let Ok(mut conn) = state.pool.get().await else {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the database is not reachable; retry shortly",
        );
    };
    let found = async {
        let owner = store::customer_of(&mut conn, order_id).await?;
        if owner.as_deref() != Some(customer.0.as_str()) {
            return Ok(None);
        }
        store::for_order(&mut conn, order_id).await.map(Some)
    };
    match found.await {
        Ok(Some(notifications)) => HttpResponse::Ok().json(OrderNotifications { order_id, notifications }),
        Ok(None) => error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            "no order of yours with this id has reached the notifications service (yet)",
        ),
        Err(error) => {
            tracing::error!(%error, "reading notifications failed");
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "something went wrong on our side; retry shortly",
            )
        }
    }
}

struct CustomerToken;

impl utoipa::Modify for CustomerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build();
        openapi.components.get_or_insert_default().add_security_scheme("customer", SecurityScheme::Http(scheme));
    }
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Notifications service",
        description = "Tells customers by e-mail what became of their orders; shows what was sent."
    ),
    paths(for_order, messaging::service::health::live, messaging::service::health::ready),
    modifiers(&CustomerToken)
)]
pub struct ApiDoc;
