//! Admin endpoints: off unless a token is configured (`<PREFIX>__ADMIN__TOKEN`, at least
//! [`MIN_TOKEN_LENGTH`] characters), and then every call needs `Authorization: Bearer <token>`.
//! A wrong or missing token is a 401 and changes nothing; more than a few wrong ones a second
//! and the process stops looking at tokens for a moment (429), so guessing is slow.

use std::future::{Ready, ready};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use serde::Deserialize;

use crate::http::error_response;

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
pub struct AdminSettings {
    /// Enables the admin endpoints when set; a token shorter than [`MIN_TOKEN_LENGTH`] is
    /// refused when the settings are read.
    #[serde(default, deserialize_with = "long_enough")]
    pub token: Option<String>,
}

/// The shortest admin token accepted: 24 random characters are beyond guessing at the rate
/// [`FAILURES_PER_SECOND`] allows.
pub const MIN_TOKEN_LENGTH: usize = 24;

fn long_enough<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let token = Option::<String>::deserialize(deserializer)?.filter(|t| !t.is_empty());
    match token {
        Some(token) if token.chars().count() < MIN_TOKEN_LENGTH => Err(serde::de::Error::custom(format!(
            "the admin token must be at least {MIN_TOKEN_LENGTH} characters (e.g. `head -c 24 /dev/urandom | base64`)"
        ))),
        token => Ok(token),
    }
}

/// Wrong admin tokens answered per second, process-wide, after a burst of as many; beyond
/// that a request gets 429 without its token being looked at.
pub const FAILURES_PER_SECOND: f64 = 5.0;

/// The budget of wrong tokens: a token bucket shared by every worker of the process.
static FAILURE_BUDGET: Mutex<Option<(f64, Instant)>> = Mutex::new(None);

/// Whether a request may have its token checked now (the budget is not spent).
fn may_check() -> bool {
    let budget = FAILURE_BUDGET.lock().unwrap_or_else(PoisonError::into_inner);
    budget.is_none_or(|(left, at)| left + at.elapsed().as_secs_f64() * FAILURES_PER_SECOND >= 1.0)
}

/// Spends one wrong token from the budget.
fn failed() {
    let mut budget = FAILURE_BUDGET.lock().unwrap_or_else(PoisonError::into_inner);
    let now = Instant::now();
    let left = budget.map_or(FAILURES_PER_SECOND, |(left, at)| {
        (left + now.duration_since(at).as_secs_f64() * FAILURES_PER_SECOND).min(FAILURES_PER_SECOND)
    });
    *budget = Some(((left - 1.0).max(0.0), now));
}

/// The configured token, as app data of the admin scope.
#[derive(Clone)]
pub struct AdminToken(pub String);

/// Proof that a request carried the admin token; take it as a handler argument.
pub struct Admin;

#[derive(Debug, thiserror::Error)]
pub enum Unauthorized {
    #[error("admin token missing or wrong")]
    Wrong,
    #[error("too many wrong admin tokens; try again in a second")]
    Throttled,
}

impl ResponseError for Unauthorized {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Wrong => StatusCode::UNAUTHORIZED,
            Self::Throttled => StatusCode::TOO_MANY_REQUESTS,
        }
    }
    fn error_response(&self) -> HttpResponse {
        if let Self::Throttled = self {
            let mut response = error_response(StatusCode::TOO_MANY_REQUESTS, "too_many_failures", self.to_string());
            response
                .headers_mut()
                .insert(actix_web::http::header::RETRY_AFTER, actix_web::http::header::HeaderValue::from_static("1"));
            return response;
        }
        let mut response = error_response(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "admin endpoints need the header Authorization: Bearer <admin token>",
        );
        response.headers_mut().insert(
            actix_web::http::header::WWW_AUTHENTICATE,
            actix_web::http::header::HeaderValue::from_static("Bearer"),
        );
        response
    }
}

impl FromRequest for Admin {
    type Error = Unauthorized;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let expected = req.app_data::<web::Data<AdminToken>>();
        let presented = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token);
        if !may_check() {
            return ready(Err(Unauthorized::Throttled));
        }
        ready(match (expected, presented) {
            (Some(expected), Some(presented)) if constant_time_eq(expected.0.as_bytes(), presented.as_bytes()) => {
                Ok(Admin)
            }
            _ => {
                failed();
                Err(Unauthorized::Wrong)
            }
        })
    }
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is case-insensitive
/// (RFC 9110, section 11.1), and spaces around the token are ignored.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Compares without an early exit, so timing does not reveal how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug, Deserialize)]
pub struct ArmRequest {
    /// `abort`, `error` or `off`.
    pub action: String,
    /// Only the next N hits (default: every hit until changed).
    pub times: Option<u32>,
}

/// `GET /admin/crash-points`: every point and its current action.
pub async fn list_crash_points(_: Admin) -> HttpResponse {
    let armed = crate::crash::armed();
    let points: serde_json::Map<String, serde_json::Value> = crate::crash::known()
        .into_iter()
        .map(|name| {
            let action = armed.iter().find(|(n, _)| n == name).map_or("off", |(_, a)| a.as_str());
            (name.to_owned(), serde_json::Value::from(action))
        })
        .collect();
    HttpResponse::Ok().json(points)
}

/// `PUT /admin/crash-points/{name}` with `{"action": "abort", "times": 1}`.
pub async fn arm_crash_point(_: Admin, name: web::Path<String>, body: web::Json<ArmRequest>) -> HttpResponse {
    let action = match body.times {
        Some(n) if body.action != "off" => format!("{n}*{}", body.action),
        _ => body.action.clone(),
    };
    match crate::crash::arm(&name, &action) {
        Ok(()) => HttpResponse::Ok().json(serde_json::json!({ "name": *name, "action": action })),
        Err(e @ crate::crash::ArmError::Unknown(_)) => {
            error_response(StatusCode::NOT_FOUND, "unknown_crash_point", e.to_string())
        }
        Err(e) => error_response(StatusCode::BAD_REQUEST, "invalid_action", e.to_string()),
    }
}

/// Adds the crash-point endpoints under `/admin` if a token is configured; the service adds
/// its own admin routes inside `extra`.
pub fn configure(
    config: &mut web::ServiceConfig,
    settings: &AdminSettings,
    extra: impl FnOnce(&mut web::ServiceConfig),
) {
    let Some(token) = settings.token.clone().filter(|t| !t.is_empty()) else { return };
    config.service(
        web::scope("/admin")
            .app_data(web::Data::new(AdminToken(token)))
            .route("/crash-points", web::get().to(list_crash_points))
            .route("/crash-points/{name}", web::put().to(arm_crash_point))
            .configure(extra),
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_compare_equal_only_when_identical() {
        assert!(super::constant_time_eq(b"secret", b"secret"));
        assert!(!super::constant_time_eq(b"secret", b"secreT"));
        assert!(!super::constant_time_eq(b"secret", b"secret-longer"));
    }

    #[test]
    fn a_short_admin_token_is_refused_when_the_settings_are_read() {
        let read = |token: &str| serde_json::from_value::<super::AdminSettings>(serde_json::json!({ "token": token }));
        let error = read("s3cret").expect_err("too short").to_string();
        assert!(error.contains("at least 24 characters"), "{error}");
        assert_eq!(read(&"x".repeat(24)).expect("long enough").token.as_deref(), Some("x".repeat(24).as_str()));
        assert_eq!(read("").expect("empty: admin off").token, None);
    }

    #[test]
    fn wrong_tokens_beyond_the_budget_are_not_even_checked() {
        // The budget is process-wide: this is the only test of this binary that spends it.
        let mut allowed = 0;
        for _ in 0..20 {
            if super::may_check() {
                allowed += 1;
                super::failed();
            }
        }
        assert!((5..=6).contains(&allowed), "{allowed} wrong tokens checked in a burst");
        std::thread::sleep(std::time::Duration::from_millis(450));
        assert!(super::may_check(), "the budget refills");
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in ["Bearer s3cret", "bearer s3cret", "BEARER  s3cret ", " Bearer s3cret"] {
            assert_eq!(super::bearer_token(value), Some("s3cret"), "{value:?}");
        }
        for value in ["Basic s3cret", "Bearer", "Bearer ", "Bearers3cret", "s3cret"] {
            assert_eq!(super::bearer_token(value), None, "{value:?}");
        }
    }
}
