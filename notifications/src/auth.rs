//! The customer asking: `GET /notifications` takes the same tokens as the order API
//! (decision 0013) and shows a customer the messages about their own orders only.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest};
use platform::auth::Unauthenticated;

/// The token's subject.
#[derive(Debug, Clone)]
pub struct Customer(pub String);

impl FromRequest for Customer {
    type Error = Unauthenticated;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(platform::auth::bearer_customer(request, "notifications").map(Customer))
    }
}
