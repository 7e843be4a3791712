//! Who is calling: every `/orders` request carries `Authorization: Bearer <JWT>`, and the
//! token's subject is the customer (decision 0013). A handler that takes a [`Customer`] runs
//! only for a valid token; anything else is a 401 with `WWW-Authenticate` (RFC 6750) that
//! says what was wrong with the token.

use std::future::{Ready, ready};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, post, web};
use platform::auth::{AuthSettings, Rejection, Signer, Verifier};
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

/// Why a request is not authenticated.
#[derive(Debug, thiserror::Error)]
pub enum Unauthenticated {
    #[error("no bearer token")]
    Missing,
    #[error("token refused: {0:?}")]
    Invalid(Rejection),
    #[error("token subject is not a customer id")]
    Subject,
}

impl ResponseError for Unauthenticated {
    fn status_code(&self) -> StatusCode {
        StatusCode::UNAUTHORIZED
    }

    fn error_response(&self) -> HttpResponse {
        let (message, challenge) = match self.description() {
            None => (
                "sign in: send Authorization: Bearer <token>, a token naming you as its subject".to_owned(),
                r#"Bearer realm="orders""#.to_owned(),
            ),
            Some(description) => (
                format!("{description}; sign in again for a new token"),
                format!(r#"Bearer realm="orders", error="invalid_token", error_description="{description}""#),
            ),
        };
        tracing::debug!(reason = %self, "request not authenticated");
        let mut response = error_response(StatusCode::UNAUTHORIZED, "unauthenticated", message);
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

impl Unauthenticated {
    /// What is wrong with the token that came (RFC 6750's `error_description`); `None` when
    /// none came.
    fn description(&self) -> Option<String> {
        match self {
            Self::Missing => None,
            Self::Invalid(rejection) => Some(rejection.describe()),
            Self::Subject => Some("the token's subject is not a valid customer id".to_owned()),
        }
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
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(platform::admin::bearer_token)
        .ok_or(Unauthenticated::Missing)?;
    // Registered with the routes: a route that takes a Customer cannot exist without it.
    let verifier = request.app_data::<web::Data<Verifier>>().ok_or(Unauthenticated::Missing)?;
    let subject = verifier.verify(token).map_err(Unauthenticated::Invalid)?;
    if !is_customer_id(&subject) {
        return Err(Unauthenticated::Subject);
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
