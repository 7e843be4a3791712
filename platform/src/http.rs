//! HTTP conventions shared by every service: the error body, how malformed JSON is
//! reported, and where a request's correlation id and trace context come from.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::HeaderMap;
use actix_web::middleware::Next;
use actix_web::{HttpResponse, error, web};
use rand::RngCore as _;
use schema::envelope::Trace;
use serde::Serialize;

/// The body of every error response.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    /// A stable, machine-readable code, e.g. `validation_failed`.
    pub error: &'a str,
    /// What went wrong and what to do about it, for people.
    pub message: String,
    /// Per-field problems, for validation errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<&'a std::collections::BTreeMap<String, String>>,
}

/// Builds an error response with the common body.
pub fn error_response(status: StatusCode, code: &str, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(ErrorBody { error: code, message: message.into(), fields: None })
}

/// The largest JSON body any endpoint accepts.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// JSON extractor settings: every way a body can be unreadable is a 400 that says why.
pub fn json_config() -> web::JsonConfig {
    web::JsonConfig::default().limit(MAX_BODY_BYTES).error_handler(|err, _req| {
        let message = match &err {
            error::JsonPayloadError::OverflowKnownLength { length, limit } => {
                format!("the body is {length} bytes; the limit is {limit} bytes")
            }
            error::JsonPayloadError::Overflow { limit } => {
                format!("the body is larger than the limit of {limit} bytes")
            }
            error::JsonPayloadError::ContentType => {
                "the body must be JSON, sent with Content-Type: application/json".into()
            }
            error::JsonPayloadError::Deserialize(e) => format!("the body is not valid JSON: {e}"),
            other => format!("the body could not be read: {other}"),
        };
        let response = error_response(StatusCode::BAD_REQUEST, "malformed_body", message.clone());
        error::InternalError::from_response(message, response).into()
    })
}

/// Receives a request's whole body, within `deadline` and [`MAX_BODY_BYTES`], before anything
/// behind it runs: admission (the order service's in-flight slots) counts a request only once
/// its body is in, so a client sending one byte at a time holds a connection for at most
/// `deadline`, never a slot. Too slow: 408 and the connection closed; too large: 400
/// (decision 0004); a body that breaks off: 400.
pub async fn receive_body(
    deadline: std::time::Duration,
    mut request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, error::Error> {
    use actix_web::HttpMessage as _;
    use futures::StreamExt as _;

    let too_large = |length: Option<usize>| {
        let message = match length {
            Some(length) => format!("the body is {length} bytes; the limit is {MAX_BODY_BYTES} bytes"),
            None => format!("the body is larger than the limit of {MAX_BODY_BYTES} bytes"),
        };
        error_response(StatusCode::BAD_REQUEST, "malformed_body", message)
    };
    let declared = request
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES) {
        return Ok(request.into_response(too_large(declared)));
    }
    let mut payload = request.take_payload();
    let mut body = web::BytesMut::new();
    let received = tokio::time::timeout(deadline, async {
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| e.to_string())?;
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(String::new());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(())
    })
    .await;
    let refusal = match received {
        Ok(Ok(())) => {
            request.set_payload(actix_web::dev::Payload::from(body.freeze()));
            return next.call(request).await.map(ServiceResponse::map_into_boxed_body);
        }
        Ok(Err(reason)) if reason.is_empty() => too_large(None),
        Ok(Err(reason)) => {
            error_response(StatusCode::BAD_REQUEST, "malformed_body", format!("the body broke off: {reason}"))
        }
        Err(_) => {
            let mut response = error_response(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!("the body did not arrive within {} ms", deadline.as_millis()),
            );
            response.head_mut().set_connection_type(actix_web::http::ConnectionType::Close);
            response
        }
    };
    Ok(request.into_response(refusal))
}

/// Answers `HEAD` for every `GET` route: the request is routed as a `GET`, and the server
/// sends the head of the answer without its body (actix-http decided that when it read the
/// request line).
pub async fn head_as_get(
    mut request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, error::Error> {
    if request.method() == actix_web::http::Method::HEAD {
        request.head_mut().method = actix_web::http::Method::GET;
    }
    next.call(request).await.map(ServiceResponse::map_into_boxed_body)
}

/// What a request no route takes gets: a JSON 404 like every other refusal.
pub async fn no_route(request: actix_web::HttpRequest) -> HttpResponse {
    let path: String = request.path().chars().take(200).collect();
    let method = request.method();
    let allowed =
        request.app_data::<web::Data<DocumentedRoutes>>().and_then(|routes| routes.methods_of(request.path()));
    match allowed {
        Some(allowed) if !allowed.iter().any(|m| *m == method.as_str()) => {
            let allow = allowed.join(", ");
            let mut response = error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{path} does not answer {method}; it answers {allow}"),
            );
            if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&allow) {
                response.headers_mut().insert(actix_web::http::header::ALLOW, value);
            }
            response
        }
        _ => error_response(StatusCode::NOT_FOUND, "not_found", format!("nothing here: {method} {path}")),
    }
}

/// The paths a service documents in its OpenAPI document, with their methods: a request for
/// one of those paths with another method is a `405` with `Allow`, not a `404`. Register it
/// as app data (`web::Data`).
#[derive(Debug, Clone, Default)]
pub struct DocumentedRoutes(Vec<(Vec<String>, Vec<&'static str>)>);

impl DocumentedRoutes {
    pub fn from_openapi(doc: &utoipa::openapi::OpenApi) -> Self {
        let routes = doc
            .paths
            .paths
            .iter()
            .map(|(template, item)| {
                let mut methods: Vec<&'static str> = [
                    ("GET", &item.get),
                    ("HEAD", &item.get),
                    ("POST", &item.post),
                    ("PUT", &item.put),
                    ("PATCH", &item.patch),
                    ("DELETE", &item.delete),
                ]
                .into_iter()
                .filter(|(_, operation)| operation.is_some())
                .map(|(method, _)| method)
                .collect();
                methods.sort_unstable();
                (template.split('/').map(str::to_owned).collect(), methods)
            })
            .collect();
        Self(routes)
    }

    /// The methods of the documented path `path` matches (`{name}` matches any one segment).
    fn methods_of(&self, path: &str) -> Option<&[&'static str]> {
        let segments: Vec<&str> = path.split('/').collect();
        self.0
            .iter()
            .find(|(template, _)| {
                template.len() == segments.len()
                    && template.iter().zip(&segments).all(|(t, s)| t == s || (t.starts_with('{') && !s.is_empty()))
            })
            .map(|(_, methods)| methods.as_slice())
    }
}

/// Path and query extractor errors are 400s with the reason too.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _req| {
        let message = format!("invalid query string: {err}");
        let response = error_response(StatusCode::BAD_REQUEST, "invalid_query", message.clone());
        error::InternalError::from_response(message, response).into()
    })
}

pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|err, _req| {
        let message = format!("invalid path: {err}");
        let response = error_response(StatusCode::BAD_REQUEST, "invalid_path", message.clone());
        error::InternalError::from_response(message, response).into()
    })
}

/// The correlation id and W3C trace context of a request: taken from `X-Correlation-Id` and
/// `traceparent` when the caller sent well-formed ones, created otherwise. While spans are
/// exported, the context is the current span's (the request's, a child of the caller's), so
/// that what the request causes elsewhere continues its trace.
pub fn trace_of(headers: &HeaderMap) -> Trace {
    let correlation_id = headers
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .filter(|id| (1..=64).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    let traceparent = crate::trace::current().unwrap_or_else(|| {
        headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .filter(|tp| is_traceparent(tp))
            .map_or_else(new_traceparent, str::to_owned)
    });
    Trace { correlation_id, traceparent: Some(traceparent) }
}

/// `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`, ids not all zero.
fn is_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex =
        |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && parts[1].bytes().any(|b| b != b'0')
        && parts[2].bytes().any(|b| b != b'0')
}

fn new_traceparent() -> String {
    let mut rng = rand::rng();
    let mut trace_id = [0u8; 16];
    let mut span_id = [0u8; 8];
    rng.fill_bytes(&mut trace_id);
    rng.fill_bytes(&mut span_id);
    trace_id[0] |= 1; // never all zero
    span_id[0] |= 1;
    format!("00-{}-{}-01", hex(&trace_id), hex(&span_id))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderName, HeaderValue};

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn a_well_formed_incoming_trace_is_kept() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let trace = trace_of(&headers(&[("x-correlation-id", "abc-1"), ("traceparent", tp)]));
        assert_eq!(trace.correlation_id, "abc-1");
        assert_eq!(trace.traceparent.as_deref(), Some(tp));
    }

    #[test]
    fn a_missing_or_malformed_trace_is_replaced_by_a_valid_one() {
        let trace = trace_of(&headers(&[("x-correlation-id", "has space"), ("traceparent", "00-zz-zz-01")]));
        assert_ne!(trace.correlation_id, "has space");
        assert!(is_traceparent(trace.traceparent.as_deref().unwrap_or_default()));
        assert!(!is_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01"));
    }
}
