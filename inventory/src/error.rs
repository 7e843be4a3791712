//! Every error the inventory service's HTTP API answers, with its status and JSON body.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use platform::http::error_response;
use schema::Sku;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadSku(String),
    #[error("unknown sku")]
    NotFound,
    #[error("name must be 1 to 100 characters, none of them a control character")]
    InvalidName,
    #[error("stock must be 0 to 1000000000")]
    InvalidStock,
    #[error("{0} is already in the catalogue")]
    Exists(Sku),
    #[error("{0}")]
    InvalidPattern(String),
    #[error("database: {0}")]
    Database(#[from] diesel::result::Error),
    #[error("no database connection: {0}")]
    Pool(#[from] diesel_async::pooled_connection::deadpool::PoolError),
}

impl ResponseError for ApiError {
    fn status_code(&self) -> actix_web::http::StatusCode {
        match self {
            Self::BadSku(_) | Self::InvalidName | Self::InvalidStock | Self::InvalidPattern(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::Exists(_) => StatusCode::CONFLICT,
            Self::NotFound => StatusCode::NOT_FOUND,
            // A lost connection, a demoted or restarting server (a failover): retry shortly.
            Self::Database(error) if platform::db::is_transient(error) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Database(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Pool(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        match self {
            Self::BadSku(problem) => error_response(status, "invalid_sku", format!("sku {problem}")),
            Self::NotFound => error_response(status, "not_found", "no product with this sku"),
            Self::InvalidName => error_response(status, "invalid_name", self.to_string()),
            Self::InvalidStock => error_response(status, "invalid_stock", self.to_string()),
            Self::Exists(_) => error_response(status, "exists", self.to_string()),
            Self::InvalidPattern(problem) => error_response(status, "invalid_pattern", problem.clone()),
            Self::Database(_) | Self::Pool(_) if status == StatusCode::SERVICE_UNAVAILABLE => {
                tracing::warn!(error = %self, "request refused");
                error_response(status, "unavailable", "the database is unreachable for a moment; retry shortly")
            }
            Self::Database(_) | Self::Pool(_) => {
                tracing::error!(error = %self, "request failed");
                error_response(status, "internal", "something went wrong on our side; retry shortly")
            }
        }
    }
}
