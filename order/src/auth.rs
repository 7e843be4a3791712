//! Who is calling: every `/orders` request carries `Authorization: Bearer <JWT>`, and the
//! token's subject is the customer (decision 0013). A handler that takes a [`Customer`] runs
//! only for a valid token; anything else is a 401 with `WWW-Authenticate` (RFC 6750) that
//! says what was wrong with the token.

use std::future::{Ready, ready};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, HttpResponse, post, web};
use platform::auth::{AuthSettings, SHIP_SCOPE, Signer, Unauthenticated};
use platform::http::error_response;
use serde::{Deserialize, Serialize};

use crate::domain::is_customer_id;

/// The authenticated customer: the token's subject.
#[derive(Debug, Clone)]
pub struct Customer(pub String);

impl Customer {
    pub fn id(&self) -> &str {
        &self.0
    }
}

impl FromRequest for Customer {
    type Error = Unauthenticated;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(request))
    }
}

/// A fulfilment operator: a valid token that grants [`SHIP_SCOPE`]. Anyone else is refused
/// with a 401 (no valid token) or a 403 (a valid token without the scope).
#[derive(Debug, Clone)]
pub struct Fulfilment(pub String);

impl Fulfilment {
    pub fn operator(&self) -> &str {
        &self.0
    }
}

impl FromRequest for Fulfilment {
    type Error = Unauthenticated;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(platform::auth::bearer_principal(request, "orders").and_then(|principal| {
            if principal.has_scope(SHIP_SCOPE) {
                Ok(Self(principal.subject))
            } else {
                Err(Unauthenticated::scope("orders", SHIP_SCOPE))
            }
        }))
    }
}

fn authenticate(request: &HttpRequest) -> Result<Customer, Unauthenticated> {
    platform::auth::bearer_customer(request, "orders").map(Customer)
}

/// The development token endpoint's key and lifetime (`ORDER__AUTH__DEV_SIGNING_KEY_FILE`).
pub struct DevTokens {
    signer: Signer,
    ttl: Duration,
}

impl DevTokens {
    /// `None` unless the settings name a development signing key.
    pub fn from_settings(settings: &AuthSettings) -> anyhow::Result<Option<Arc<Self>>> {
        let Some(path) = &settings.dev_signing_key_file else {
            return Ok(None);
        };
        let signer = Signer::from_file(path, &settings.issuer, &settings.audience)?;
        tracing::warn!(
            key = %path.display(),
            "development tokens are ON: POST /auth/token mints a token for any customer; never enable this where real customers are"
        );
        Ok(Some(Arc::new(Self { signer, ttl: Duration::from_secs(settings.dev_token_ttl_secs) })))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    customer: String,
    /// `orders:ship` for a fulfilment operator's token; none for a customer's.
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Serialize)]
struct TokenReply {
    token: String,
    customer: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    expires_in: u64,
}

/// Development only, and registered only when enabled: a token for any customer (or, with
/// `"scope": "orders:ship"`, a fulfilment operator), so that the web page and a shell can act
/// as one without an identity provider.
#[post("/auth/token")]
pub async fn dev_token(request: web::Json<TokenRequest>, tokens: web::Data<DevTokens>) -> HttpResponse {
    let TokenRequest { customer, scope } = request.into_inner();
    if !is_customer_id(&customer) {
        return error_response(
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "customer must be 1 to 64 characters of letters, digits, '-', '_', '.' or '@'",
        );
    }
    if scope.as_deref().is_some_and(|scope| scope != SHIP_SCOPE) {
        return error_response(
            StatusCode::BAD_REQUEST,
            "validation_failed",
            format!("scope may only be {SHIP_SCOPE} (a fulfilment operator), or left out (a customer)"),
        );
    }
    let token = tokens.signer.mint_with_scope(&customer, scope.as_deref(), tokens.ttl);
    HttpResponse::Ok().json(TokenReply { token, customer, scope, expires_in: tokens.ttl.as_secs() })
}
