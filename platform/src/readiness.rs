//! Whether a service has what it needs to do its work. A service starts serving HTTP at once
//! and reports "not ready" (503, with the reason) until its database is reachable and
//! migrated, instead of refusing connections or crash-looping.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::middleware::Next;
use actix_web::web;

#[derive(Debug, Default)]
pub struct Readiness {
    ready: AtomicBool,
    waiting_for: Mutex<Option<String>>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn set_ready(&self) {
        *self.lock() = None;
        self.ready.store(true, Ordering::Release);
    }

    /// Records what the service is still waiting for, for `/health`.
    pub fn waiting_for(&self, what: impl Into<String>) {
        *self.lock() = Some(what.into());
    }

    /// Why the service is not ready, if it is not.
    pub fn problem(&self) -> Option<String> {
        if self.is_ready() {
            return None;
        }
        Some(self.lock().clone().unwrap_or_else(|| "starting".to_owned()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.waiting_for.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Middleware for business routes: 503 with `Retry-After` until the service is ready.
pub async fn require_ready(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let problem = request.app_data::<web::Data<std::sync::Arc<Readiness>>>().and_then(|r| r.problem());
    if let Some(problem) = problem {
        let mut response = crate::http::error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "starting",
            format!("the service is starting ({problem}); retry shortly"),
        );
        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
        return Ok(request.into_response(response));
    }
    next.call(request).await.map(ServiceResponse::map_into_boxed_body)
}
