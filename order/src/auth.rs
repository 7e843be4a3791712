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
use platform::auth::{AuthSettings, Signer, Unauthenticated};
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

fn authenticate(request: &HttpRequest) -> Result<Customer, Unauthenticated> {
    let subject = platform::auth::bearer_subject(request, "orders")?;
    if !is_customer_id(&subject) {
        return Err(Unauthenticated::subject("orders", "the token's subject is not a valid customer id"));
    }
    Ok(Customer(subject))
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
pub struct TokenRequest {
    customer: String,
}

#[derive(Serialize)]
struct TokenReply {
    token: String,
    customer: String,
    expires_in: u64,
}

/// Development only, and registered only when enabled: a token for any customer, so that the
/// web page and a shell can act as one without an identity provider.
#[post("/auth/token")]
pub async fn dev_token(request: web::Json<TokenRequest>, tokens: web::Data<DevTokens>) -> HttpResponse {
    let customer = request.into_inner().customer;
    if !is_customer_id(&customer) {
        return error_response(
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "customer must be 1 to 64 characters of letters, digits, '-', '_', '.' or '@'",
        );
    }
    let token = tokens.signer.mint(&customer, tokens.ttl);
    HttpResponse::Ok().json(TokenReply { token, customer, expires_in: tokens.ttl.as_secs() })
}
