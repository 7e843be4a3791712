//! Whether a service has what it needs to do its work. A service starts serving HTTP at once
//! and reports "not ready" until its database is reachable and migrated (503: the reason on
//! `/health`, a plain "retry shortly" on the business routes), instead of refusing connections
//! or crash-looping.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::middleware::Next;

#[derive(Debug, Default)]
pub struct Readiness {
    ready: AtomicBool,
    waiting_for: Mutex<Option<String>>,
    /// Set once a background task died: the process is stopping and never ready again.
    failure: Mutex<Option<String>>,
    /// The service's recent dependency checks (`crate::health`).
    recent: crate::health::RecentChecks,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn set_ready(&self) {
        if self.failure().is_some() {
            return;
        }
        *self.lock() = None;
        self.ready.store(true, Ordering::Release);
    }

    /// Records that part of the process died (`what`): not ready from now on, for good.
    pub fn fail(&self, what: impl Into<String>) {
        let what = what.into();
        *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(what.clone());
        *self.lock() = Some(what);
        self.ready.store(false, Ordering::Release);
    }

    /// What died, if anything did.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Records what the service is still waiting for, for `/health`.
    pub fn waiting_for(&self, what: impl Into<String>) {
        *self.lock() = Some(what.into());
    }

    /// Runs the check `name` with `probe`, or reuses its result from less than a second ago
    /// (`crate::health::REUSE_FOR`).
    pub async fn checked<F: std::future::Future<Output = crate::health::Check>>(
        &self,
        name: &str,
        probe: impl FnOnce() -> F,
    ) -> crate::health::Check {
        self.recent.get_or_probe(name, probe).await
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

/// Middleware for business routes: 503 with `Retry-After` until the service is ready. Wrap
/// a scope with it as `from_fn(move |req, next| require_ready(Arc::clone(&readiness), req, next))`:
/// the readiness is given, not looked up, so it cannot be missing.
pub async fn require_ready(
    readiness: std::sync::Arc<Readiness>,
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if let Some(problem) = readiness.problem() {
        // What it waits for (a database's error, with its host and its words) is for the
        // operators: `/health` and the log say it; a client learns only to come back.
        tracing::debug!(%problem, "refused while not ready");
        let mut response = crate::http::error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "starting",
            "the service is starting or cannot reach what it needs; retry shortly",
        );
        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
        return Ok(request.into_response(response));
    }
    next.call(request).await.map(ServiceResponse::map_into_boxed_body)
}
