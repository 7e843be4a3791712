//! Saying no early instead of queueing without bound: a token bucket per customer (`429`),
//! a cap on each customer's requests waiting for a change (`429`), and a cap on requests in
//! flight (`503`), all with `Retry-After`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::middleware::Next;
use serde::Deserialize;
use tokio::sync::Semaphore;

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct AdmissionSettings {
    /// Orders a customer may place per second, sustained.
    #[serde(default = "default_per_second")]
    pub per_customer_per_second: f64,
    /// How many a customer may place at once after a quiet spell.
    #[serde(default = "default_burst")]
    pub per_customer_burst: f64,
    /// Requests to `/orders` handled at once; more are refused with 503.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Requests one customer may have waiting for an order to change at once (`GET
    /// /orders/{id}` with `Prefer: wait`); more are refused with 429, so that one customer's
    /// long polls cannot hold every in-flight slot.
    #[serde(default = "default_max_waiting_per_customer")]
    pub max_waiting_per_customer: usize,
}

impl Default for AdmissionSettings {
    fn default() -> Self {
        Self {
            per_customer_per_second: default_per_second(),
            per_customer_burst: default_burst(),
            max_in_flight: default_max_in_flight(),
            max_waiting_per_customer: default_max_waiting_per_customer(),
        }
    }
}

fn default_per_second() -> f64 {
    50.0
}
fn default_burst() -> f64 {
    100.0
}
fn default_max_in_flight() -> usize {
    1024
}
fn default_max_waiting_per_customer() -> usize {
    16
}

/// How many requests each customer has waiting for a change. Only customers with at least
/// one are kept, so the map is never larger than the requests in flight.
#[derive(Debug)]
pub struct WaitingCap {
    per_customer: usize,
    waiting: Mutex<HashMap<String, usize>>,
}

/// One request's place among its customer's waiting ones, given back when dropped.
#[derive(Debug)]
pub struct WaitingSlot {
    cap: Arc<WaitingCap>,
    customer: String,
}

impl WaitingCap {
    pub fn new(settings: &AdmissionSettings) -> Arc<Self> {
        Arc::new(Self { per_customer: settings.max_waiting_per_customer.max(1), waiting: Mutex::default() })
    }

    /// A place for one more waiting request of `customer`, or `None` if it has its fill.
    pub fn enter(self: &Arc<Self>, customer: &str) -> Option<WaitingSlot> {
        let mut waiting = self.lock();
        let count = waiting.entry(customer.to_owned()).or_default();
        if *count >= self.per_customer {
            return None;
        }
        *count += 1;
        Some(WaitingSlot { cap: Arc::clone(self), customer: customer.to_owned() })
    }

    /// The customers with a request waiting now.
    #[cfg(test)]
    fn customers(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for WaitingSlot {
    fn drop(&mut self) {
        let mut waiting = self.cap.lock();
        if let Some(count) = waiting.get_mut(&self.customer) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                waiting.remove(&self.customer);
            }
        }
    }
}

/// Token buckets, one per customer.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// Buckets untouched this long are full again and can be forgotten.
    const FORGET_AFTER: Duration = Duration::from_secs(60);

    pub fn new(settings: &AdmissionSettings) -> Self {
        Self {
            rate: settings.per_customer_per_second.max(0.001),
            burst: settings.per_customer_burst.max(1.0),
            buckets: Mutex::default(),
        }
    }

    /// Takes a token for `customer`, or says how long until one is available.
    pub fn admit(&self, customer: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() > 10_000 {
            buckets.retain(|_, (_, at)| now.duration_since(*at) < Self::FORGET_AFTER);
        }
        let (tokens, at) = buckets.entry(customer.to_owned()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.rate))
        }
    }
}

/// Whole seconds for `Retry-After`, at least 1.
pub fn retry_after(wait: Duration) -> HeaderValue {
    HeaderValue::from(wait.as_secs_f64().ceil().max(1.0) as u64)
}

/// Middleware: refuses a request with 503 when `max_in_flight` are already being handled.
pub async fn limit_in_flight(
    slots: Arc<Semaphore>,
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Ok(_slot) = slots.try_acquire_owned() else {
        let mut response = platform::http::error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the order service is handling as many requests as it can; retry in a moment",
        );
        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
        return Ok(request.into_response(response));
    };
    next.call(request).await.map(ServiceResponse::map_into_boxed_body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_customer_gets_the_burst_then_the_rate() {
        let limiter = RateLimiter::new(&AdmissionSettings {
            per_customer_per_second: 2.0,
            per_customer_burst: 3.0,
            ..AdmissionSettings::default()
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.admit("alice", t0).is_ok());
        }
        let wait = limiter.admit("alice", t0).expect_err("burst spent");
        assert_eq!(wait, Duration::from_millis(500));
        assert!(limiter.admit("bob", t0).is_ok(), "customers are independent");
        assert!(limiter.admit("alice", t0 + Duration::from_millis(500)).is_ok(), "refilled at 2/s");
    }

    #[test]
    fn a_customer_has_at_most_its_cap_waiting_and_a_finished_wait_frees_its_place() {
        let cap = WaitingCap::new(&AdmissionSettings { max_waiting_per_customer: 2, ..AdmissionSettings::default() });
        let first = cap.enter("alice").expect("room");
        let _second = cap.enter("alice").expect("room");
        assert!(cap.enter("alice").is_none(), "a third waits over the cap");
        let bob = cap.enter("bob").expect("customers are independent");
        drop(first);
        assert!(cap.enter("alice").is_some(), "a finished wait frees its place");
        drop(bob);
        assert_eq!(cap.customers(), 1, "a customer with nothing waiting is forgotten");
    }

    #[test]
    fn retry_after_is_whole_seconds_and_never_zero() {
        assert_eq!(retry_after(Duration::from_millis(10)), HeaderValue::from(1u64));
        assert_eq!(retry_after(Duration::from_millis(1500)), HeaderValue::from(2u64));
    }
}
