//! The customer asking: `GET /notifications` takes the same tokens as the order API
//! (decision 0013) and shows a customer the messages about their own orders only.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use platform::auth::{Rejection, Verifier};
use platform::http::error_response;

/// The token's subject.
#[derive(Debug, Clone)]
pub struct Customer(pub String);

#[derive(Debug, thiserror::Error)]
pub enum Unauthenticated {
    #[error("no bearer token")]
    Missing,
    #[error("token refused: {0:?}")]
    Invalid(Rejection),
}

impl ResponseError for Unauthenticated {
    fn status_code(&self) -> StatusCode {
        StatusCode::UNAUTHORIZED
    }

    fn error_response(&self) -> HttpResponse {
        let (message, challenge) = match self {
            Self::Missing => (
                "sign in: send Authorization: Bearer <token>, the token you use for /orders".to_owned(),
                r#"Bearer realm="notifications""#.to_owned(),
            ),
            Self::Invalid(rejection) => {
                let description = rejection.describe();
                (
                    format!("{description}; sign in again for a new token"),
                    format!(
                        r#"Bearer realm="notifications", error="invalid_token", error_description="{description}""#
                    ),
                )
            }
        };
        let mut response = error_response(StatusCode::UNAUTHORIZED, "unauthenticated", message);
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

impl FromRequest for Customer {
    type Error = Unauthenticated;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let token = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(platform::admin::bearer_token);
        let verifier = request.app_data::<web::Data<Verifier>>();
        ready(match (token, verifier) {
            (Some(token), Some(verifier)) => verifier.verify(token).map(Customer).map_err(Unauthenticated::Invalid),
            _ => Err(Unauthenticated::Missing),
        })
    }
}
