//! The console: the web page (`/`, from `web/`, compiled into the binary so it needs no files
//! at run time) and what it reads: `/stats/latency` for the latency alert ([`latency`]), and
//! `/system/*`, which gathers the other services' health, the stock list and the gremlin
//! switch through this service so that the browser talks to one origin. It lives in the order
//! service because its alert is the order API's own latency, measured as requests pass
//! (decision 0032); it is this one module, added with [`configure`].

use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode, header};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, get, put, web};
use serde::Deserialize;

pub mod latency;

use latency::{LatencySummary, LatencyWindow};

/// The console's routes (the latency window and the peers are app data the service gives).
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(index)
        .service(script)
        .service(style)
        .service(latency_summary)
        .service(system_health)
        .service(system_stock)
        .service(get_gremlin)
        .service(put_gremlin);
}

const INDEX: &str = include_str!("../../../web/index.html");
const SCRIPT: &str = include_str!("../../../web/app.js");
const STYLE: &str = include_str!("../../../web/style.css");

#[get("/")]
pub async fn index() -> HttpResponse {
    HttpResponse::Ok().content_type("text/html; charset=utf-8").insert_header(no_store()).body(INDEX)
}

#[get("/app.js")]
pub async fn script() -> HttpResponse {
    HttpResponse::Ok().content_type("text/javascript; charset=utf-8").insert_header(no_store()).body(SCRIPT)
}

#[get("/style.css")]
pub async fn style() -> HttpResponse {
    HttpResponse::Ok().content_type("text/css; charset=utf-8").insert_header(no_store()).body(STYLE)
}

fn no_store() -> (header::HeaderName, &'static str) {
    (header::CACHE_CONTROL, "no-store")
}

/// Records every `POST /orders` response time in the latency window.
pub async fn record_latency(
    window: web::Data<LatencyWindow>,
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let timed = request.method() == Method::POST && request.path() == "/orders";
    let started = Instant::now();
    let response = next.call(request).await;
    // A refusal before any work (no token, an invalid body, over the rate) is fast and says
    // nothing of what shoppers wait on: counted, a flood of them would turn the alert green.
    let taken_up = response.as_ref().is_ok_and(|r| !r.status().is_client_error());
    if timed && taken_up {
        let now = Instant::now();
        window.record(now, now - started);
    }
    response
}

/// The order API's average, count and p95 response time over the rolling window, and
/// whether the average is above the alert threshold.
#[utoipa::path(responses((status = 200, body = LatencySummary)))]
#[get("/stats/latency")]
pub async fn latency_summary(window: web::Data<LatencyWindow>) -> HttpResponse {
    HttpResponse::Ok().insert_header(no_store()).json(window.summary(Instant::now()))
}

/// Where the other services answer, for the page's views of them.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct PeerSettings {
    #[serde(default = "default_inventory")]
    pub inventory: String,
    #[serde(default = "default_relay")]
    pub relay: String,
    /// The trace collector's query API (Jaeger's), for an order's waterfall; none: not shown.
    #[serde(default)]
    pub traces: Option<String>,
}

impl Default for PeerSettings {
    fn default() -> Self {
        Self { inventory: default_inventory(), relay: default_relay(), traces: None }
    }
}

fn default_inventory() -> String {
    platform::system::process("inventory").local_url()
}

fn default_relay() -> String {
    platform::system::process("relay").local_url()
}

/// HTTP access to the other services, with a short timeout: the page must not hang on a
/// service that does not answer.
pub struct Peers {
    pub settings: PeerSettings,
    pub http: reqwest::Client,
}

impl Peers {
    pub fn new(settings: PeerSettings) -> reqwest::Result<Self> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(1)).build()?;
        Ok(Self { settings, http })
    }

    /// A peer's `/health` body, or a stand-in saying why it could not be had.
    async fn health(&self, name: &str, base: &str) -> serde_json::Value {
        match self.http.get(format!("{base}/health")).send().await {
            Ok(response) => match response.json::<serde_json::Value>().await {
                Ok(body) => body,
                Err(error) => down(format!("{name}: unreadable health reply: {error}")),
            },
            Err(error) if error.is_timeout() => down(format!("{name}: no answer from {base} within 1 s")),
            Err(_) => down(format!("{name}: not reachable at {base}")),
        }
    }
}

fn down(message: String) -> serde_json::Value {
    serde_json::json!({ "status": "down", "message": message, "checks": {} })
}

/// Every service's `/health` body, by service name.
#[get("/system/health")]
pub async fn system_health(health: web::Data<messaging::service::Health>, peers: web::Data<Peers>) -> HttpResponse {
    let (order, inventory, relay) = futures::join!(
        health.body(),
        peers.health("inventory", &peers.settings.inventory),
        peers.health("relay", &peers.settings.relay),
    );
    HttpResponse::Ok()
        .insert_header(no_store())
        .json(serde_json::json!({ "order": order, "inventory": inventory, "relay": relay }))
}

/// Inventory's stock list.
#[get("/system/stock")]
pub async fn system_stock(peers: web::Data<Peers>) -> HttpResponse {
    forward(&peers, reqwest::Method::GET, "/stock", None, None).await
}

/// Inventory's gremlin pattern; needs the inventory admin token, passed through.
#[get("/system/gremlin")]
pub async fn get_gremlin(request: HttpRequest, peers: web::Data<Peers>) -> HttpResponse {
    forward(&peers, reqwest::Method::GET, "/admin/gremlin", authorization(&request), None).await
}

#[put("/system/gremlin")]
pub async fn put_gremlin(request: HttpRequest, peers: web::Data<Peers>, body: web::Bytes) -> HttpResponse {
    forward(&peers, reqwest::Method::PUT, "/admin/gremlin", authorization(&request), Some(body)).await
}

fn authorization(request: &HttpRequest) -> Option<String> {
    request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// Sends a request to inventory and relays its status and JSON body; 502 if it does not answer.
async fn forward(
    peers: &Peers,
    method: reqwest::Method,
    path: &str,
    authorization: Option<String>,
    body: Option<web::Bytes>,
) -> HttpResponse {
    let base = &peers.settings.inventory;
    let mut request = peers.http.request(method, format!("{base}{path}"));
    if let Some(authorization) = authorization {
        request = request.header(reqwest::header::AUTHORIZATION, authorization);
    }
    if let Some(body) = body {
        request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(body.to_vec());
    }
    let answer = async {
        let response = request.send().await?;
        let status = response.status().as_u16();
        let body = response.bytes().await?;
        Ok::<_, reqwest::Error>((status, body))
    };
    match answer.await {
        Ok((status, body)) => HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY))
            .insert_header(no_store())
            .content_type("application/json")
            .body(body),
        Err(_) => platform::http::error_response(
            StatusCode::BAD_GATEWAY,
            "inventory_unreachable",
            format!("inventory does not answer at {base}"),
        ),
    }
}
