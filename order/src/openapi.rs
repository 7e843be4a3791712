//! The OpenAPI document of the order service, generated from the handlers' annotations and
//! served at `/openapi.json`.

use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "Order service", description = "Place, follow and cancel orders."),
    paths(
        crate::routes::orders::place_order,
        crate::routes::orders::get_order,
        crate::routes::orders::list_orders,
        crate::routes::orders::cancel_order,
        crate::routes::health::live,
        crate::routes::health::ready,
    )
)]
pub struct ApiDoc;
