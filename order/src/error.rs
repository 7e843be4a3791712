//! The one place where order-service failures become HTTP responses. 4xx bodies say what
//! the client can do; 5xx bodies reveal nothing internal, and the cause goes to the log.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use platform::http::{ErrorBody, error_response};

use crate::domain::{FieldErrors, OrderStatus};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request is invalid")]
    Validation(FieldErrors),
    #[error("the query is invalid: {0}")]
    InvalidQuery(String),
    #[error("missing or malformed Idempotency-Key header")]
    IdempotencyKey,
    #[error("idempotency key reused with a different request")]
    KeyReused { existing: uuid::Uuid },
    #[error("order not found")]
    NotFound,
    #[error("order cannot be cancelled in status {0}")]
    NotCancellable(OrderStatus),
    #[error("order cannot ship in status {0}")]
    NotShippable(OrderStatus),
    #[error("database: {0}")]
    Database(#[from] diesel::result::Error),
    #[error("no database connection: {0}")]
    Pool(#[from] diesel_async::pooled_connection::deadpool::PoolError),
    #[error("customer {customer} is over the rate limit")]
    RateLimited { customer: String, retry_after: std::time::Duration },
    #[error("customer {customer} has as many requests waiting as it may")]
    TooManyWaiting { customer: String },
    /// The write committed on the primary, but no synchronous standby holds it within the
    /// bound: a failover now would take it back, so it is not acknowledged (decision 0030,
    /// rule 1). A retry with the same key answers it once the standby has it.
    #[error("the write is not yet held by a synchronous standby: {0}")]
    NotDurable(#[from] platform::standby::WaitError),
    #[error(transparent)]
    Injected(#[from] platform::crash::InjectedFault),
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Validation(_) | Self::InvalidQuery(_) | Self::IdempotencyKey => StatusCode::BAD_REQUEST,
            Self::KeyReused { .. } | Self::NotCancellable(_) | Self::NotShippable(_) => StatusCode::CONFLICT,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Database(error) if platform::db::is_transient(error) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Database(_) | Self::Injected(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::RateLimited { .. } | Self::TooManyWaiting { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Pool(_) | Self::NotDurable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        match self {
            Self::Validation(fields) => HttpResponse::BadRequest().json(ErrorBody {
                error: "validation_failed",
                message: "the order is invalid; see fields for what to fix".into(),
                fields: Some(fields),
            }),
            Self::InvalidQuery(message) => error_response(status, "invalid_query", message.clone()),
            Self::IdempotencyKey => error_response(
                status,
                "idempotency_key_required",
                "send an Idempotency-Key header of 1 to 255 visible ASCII characters, unique per order \
                 (a UUID is a good choice); reuse it only to retry the same request",
            ),
            Self::KeyReused { existing } => error_response(
                status,
                "idempotency_key_reused",
                format!(
                    "this Idempotency-Key was already used for a different request (order {existing}); \
                     use a new key for a new order, or resend the original request unchanged to retry it"
                ),
            ),
            Self::NotFound => error_response(status, "not_found", "no order with this id"),
            Self::NotCancellable(current) => error_response(
                status,
                "not_cancellable",
                match current {
                    OrderStatus::Rejected => "the order was rejected; there is nothing to cancel".to_owned(),
                    OrderStatus::Cancelled => "the order is already cancelled".to_owned(),
                    OrderStatus::Shipping => {
                        "shipping has started: the stock is on its way out of the warehouse, so the order can no \
                         longer be cancelled"
                            .to_owned()
                    }
                    OrderStatus::Shipped => "the order has shipped; it can no longer be cancelled".to_owned(),
                    other => format!("an order in status {other} cannot be cancelled"),
                },
            ),
            Self::NotShippable(current) => error_response(
                status,
                "not_shippable",
                match current {
                    OrderStatus::Pending => {
                        "the order is not confirmed yet: inventory has not reserved its stock; ship it once it is \
                         CONFIRMED"
                            .to_owned()
                    }
                    OrderStatus::Rejected => "the order was rejected; there is no stock to ship".to_owned(),
                    OrderStatus::Cancelling | OrderStatus::Cancelled => {
                        "the order is cancelled (or being cancelled); there is nothing to ship".to_owned()
                    }
                    other => format!("an order in status {other} cannot ship"),
                },
            ),
            Self::RateLimited { retry_after, .. } => {
                let mut response = error_response(
                    status,
                    "rate_limited",
                    "too many orders from this customer in a short time; retry after the delay in Retry-After",
                );
                response
                    .headers_mut()
                    .insert(actix_web::http::header::RETRY_AFTER, crate::admission::retry_after(*retry_after));
                response
            }
            Self::TooManyWaiting { .. } => {
                let mut response = error_response(
                    status,
                    "too_many_waiting",
                    "this customer already has as many requests waiting for a change as it may; let one of them \
                     answer, or ask without Prefer: wait, and retry after the delay in Retry-After",
                );
                response.headers_mut().insert(
                    actix_web::http::header::RETRY_AFTER,
                    crate::admission::retry_after(std::time::Duration::from_secs(1)),
                );
                response
            }
            // A lost connection, a demoted or restarting server (a failover), a conflict:
            // the same request may succeed a moment later, and says so.
            Self::Database(error) if platform::db::is_transient(error) => unavailable(status, self),
            Self::Database(_) | Self::Injected(_) => {
                tracing::error!(error = %self, "request failed");
                error_response(status, "internal", "something went wrong on our side; retrying is safe")
            }
            Self::NotDurable(_) => {
                tracing::warn!(error = %self, "write not acknowledged: the standby does not hold it yet");
                let mut response = error_response(
                    status,
                    "not_yet_durable",
                    "the request was recorded but is not yet safe against the loss of the database server; \
                     send it again unchanged (same Idempotency-Key) after the delay in Retry-After: it is never \
                     applied twice",
                );
                response.headers_mut().insert(
                    actix_web::http::header::RETRY_AFTER,
                    crate::admission::retry_after(std::time::Duration::from_secs(1)),
                );
                response
            }
            Self::Pool(_) => unavailable(status, self),
        }
    }
}

/// `503 unavailable` with Retry-After: the service is busy or its database is out of reach for
/// a moment; the request may be sent again (a write with the same Idempotency-Key).
fn unavailable(status: StatusCode, error: &ApiError) -> HttpResponse {
    tracing::warn!(%error, "request refused");
    let mut response =
        error_response(status, "unavailable", "the service is busy or its database is unreachable; retry shortly");
    response
        .headers_mut()
        .insert(actix_web::http::header::RETRY_AFTER, crate::admission::retry_after(std::time::Duration::from_secs(1)));
    response
}

#[cfg(test)]
mod tests {
    use diesel::result::{DatabaseErrorKind, Error};

    use super::*;

    fn database(kind: DatabaseErrorKind, message: &'static str) -> ApiError {
        ApiError::Database(platform::db::planted_error(kind, message))
    }

    /// What a failover looks like from a request: the primary's connection closes under it,
    /// or the pool reaches a node that is shutting down or no longer the primary.
    #[test]
    fn a_database_lost_for_a_moment_is_a_503_to_retry_not_a_500() {
        for error in [
            database(DatabaseErrorKind::ClosedConnection, "connection closed"),
            database(DatabaseErrorKind::ReadOnlyTransaction, "cannot execute INSERT in a read-only transaction"),
            database(DatabaseErrorKind::Unknown, "terminating connection due to administrator command"),
            database(DatabaseErrorKind::Unknown, "the database system is shutting down"),
            ApiError::Database(Error::BrokenTransactionManager),
        ] {
            assert_eq!(error.status_code(), StatusCode::SERVICE_UNAVAILABLE, "{error}");
            let response = error.error_response();
            assert!(response.headers().contains_key(actix_web::http::header::RETRY_AFTER), "{error}");
        }
    }

    #[test]
    fn any_other_database_error_is_ours_a_500() {
        let error = database(DatabaseErrorKind::UniqueViolation, "duplicate key value");
        assert_eq!(error.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
