//! The OpenAPI document of the order service, generated from the handlers' annotations and
//! served at `/openapi.json`.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "Order service", description = "Place, follow, cancel and ship orders."),
    paths(
        crate::routes::orders::place_order,
        crate::routes::orders::get_order,
        crate::routes::orders::list_orders,
        crate::routes::orders::cancel_order,
        crate::routes::orders::ship_order,
        messaging::service::health::live,
        messaging::service::health::ready,
    ),
    modifiers(&CustomerToken)
)]
pub struct ApiDoc;

/// The body of every error answer (`platform::http::ErrorBody`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ErrorReply {
    /// A stable, machine-readable code, e.g. `validation_failed`.
    error: String,
    /// What went wrong and what to do about it, for people.
    message: String,
    /// Per-field problems of a validation error: the field's path (`lines[0].quantity`) and what is wrong.
    fields: Option<std::collections::BTreeMap<String, String>>,
}

/// `/orders` takes the customer from a bearer token (decision 0013); shipping takes a token
/// that grants `orders:ship` (decision 0019).
struct CustomerToken;

impl Modify for CustomerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "customer_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An EdDSA-signed JWT whose subject is the customer, with the service's issuer and audience",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "operator_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An EdDSA-signed JWT of a fulfilment operator: its `scope` claim includes `orders:ship`",
                    ))
                    .build(),
            ),
        );
    }
}
