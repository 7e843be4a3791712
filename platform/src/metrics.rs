//! Prometheus metrics: one registry per process, served at `/metrics` in the text format.
//! This module holds what every process records (HTTP request durations, database pool
//! usage); each service adds its own metrics to the same registry.
//!
//! `/metrics/catalogue` lists every metric the process registered, with the series names
//! Prometheus stores (`orders_total`, `http_request_duration_seconds_bucket`), even those with
//! no sample yet, which `/metrics` leaves out: `scripts/check-compose` checks the dashboard's
//! and the alert rules' queries against it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{HttpResponse, web};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tracing::Instrument as _;

use crate::db::PgPool;

/// Buckets for latencies from 1 ms to about 33 s.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 16)
}

pub fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// One of the standard methods, or `other`: a client may send any token as a method, and
    /// each would otherwise be a new series kept for the life of the process.
    pub method: &'static str,
    /// The route pattern (`/orders/{id}`), never the raw path, so ids do not explode cardinality.
    pub route: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DatabaseLabels {
    pub database: String,
}

/// A registered metric, as `/metrics/catalogue` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Described {
    pub name: String,
    /// `counter`, `gauge`, `histogram`, `info` or `unknown`.
    pub kind: String,
    /// The names of the series Prometheus stores for it.
    pub series: Vec<String>,
}

impl Described {
    fn new(name: &str, unit: Option<&Unit>, kind: MetricType) -> Self {
        let base = match unit {
            Some(unit) => format!("{name}_{}", unit.as_str()),
            None => name.to_owned(),
        };
        let suffixes: &[&str] = match kind {
            MetricType::Counter => &["_total"],
            MetricType::Histogram => &["_bucket", "_sum", "_count"],
            MetricType::Info => &["_info"],
            MetricType::Gauge | MetricType::Unknown => &[""],
        };
        let series = suffixes.iter().map(|suffix| format!("{base}{suffix}")).collect();
        Self { name: base, kind: kind.as_str().to_owned(), series }
    }
}

/// A process's registry, plus what must be refreshed just before each scrape.
pub struct Metrics {
    registry: Mutex<Registry>,
    catalogue: Mutex<Vec<Described>>,
    http: Family<HttpLabels, Histogram>,
    pool_in_use: Family<DatabaseLabels, Gauge>,
    pool_idle: Family<DatabaseLabels, Gauge>,
    pools: Mutex<Vec<(String, PgPool)>>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let this = Self {
            registry: Mutex::default(),
            catalogue: Mutex::default(),
            http: Family::<HttpLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram),
            pool_in_use: Family::default(),
            pool_idle: Family::default(),
            pools: Mutex::default(),
        };
        this.register_with_unit(
            "http_request_duration",
            "Time to answer an HTTP request",
            Unit::Seconds,
            this.http.clone(),
        );
        this.register("db_pool_connections_in_use", "Pool connections lent out", this.pool_in_use.clone());
        this.register("db_pool_connections_idle", "Pool connections open and idle", this.pool_idle.clone());
        this.register(
            "trace_spans",
            "Spans this process finished, by outcome: exported, or dropped (queue full, export failed)",
            crate::trace::counters(),
        );
        Arc::new(this)
    }

    /// Adds a service's own metric.
    pub fn register(&self, name: &str, help: &str, metric: impl prometheus_client::registry::Metric) {
        self.note(Described::new(name, None, metric.metric_type()));
        self.registry.lock().unwrap_or_else(PoisonError::into_inner).register(name, help, metric);
    }

    pub fn register_with_unit(
        &self,
        name: &str,
        help: &str,
        unit: Unit,
        metric: impl prometheus_client::registry::Metric,
    ) {
        self.note(Described::new(name, Some(&unit), metric.metric_type()));
        self.registry.lock().unwrap_or_else(PoisonError::into_inner).register_with_unit(name, help, unit, metric);
    }

    fn note(&self, described: Described) {
        self.catalogue.lock().unwrap_or_else(PoisonError::into_inner).push(described);
    }

    /// Every metric registered so far, in the order of registration.
    pub fn catalogue(&self) -> Vec<Described> {
        self.catalogue.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Reports `pool`'s usage as `database`.
    pub fn watch_pool(&self, database: &str, pool: PgPool) {
        self.pools.lock().unwrap_or_else(PoisonError::into_inner).push((database.to_owned(), pool));
    }

    pub fn record_http(&self, method: &Method, route: &str, status: u16, seconds: f64) {
        let labels = HttpLabels { method: method_label(method), route: route.to_owned(), status };
        self.http.get_or_create(&labels).observe(seconds);
    }

    /// The text exposition of every metric, refreshed.
    pub fn encode(&self) -> String {
        for (database, pool) in self.pools.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            let status = pool.status();
            let labels = DatabaseLabels { database: database.clone() };
            let in_use = status.size.saturating_sub(status.available);
            self.pool_in_use.get_or_create(&labels).set(in_use as i64);
            self.pool_idle.get_or_create(&labels).set(status.available as i64);
        }
        let mut text = String::new();
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &registry) {
            tracing::error!(%error, "cannot encode metrics");
        }
        text
    }
}

/// `GET /metrics`.
pub async fn endpoint(metrics: web::Data<Arc<Metrics>>) -> HttpResponse {
    HttpResponse::Ok().content_type("application/openmetrics-text; version=1.0.0; charset=utf-8").body(metrics.encode())
}

/// `GET /metrics/catalogue`: every metric registered, with its series' names (module doc).
pub async fn catalogue(metrics: web::Data<Arc<Metrics>>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "metrics": metrics.catalogue() }))
}

/// The label of `method`: the standard methods by name, any other as `other`.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    KNOWN.iter().find(|known| *known == method).map_or("other", Method::as_str)
}

/// Middleware: records every request's duration by method, route pattern and status, and
/// gives it a span (a child of the caller's `traceparent`), except for scrapes and health
/// probes, which would be most of the traces and tell nothing.
pub async fn record_requests(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let metrics = request.app_data::<web::Data<Arc<Metrics>>>().cloned();
    let method = request.method().clone();
    let route = request.match_pattern().unwrap_or_else(|| "unmatched".to_owned());
    let span = if route == "/metrics" || route.starts_with("/health") || !crate::trace::exporting() {
        tracing::Span::none()
    } else {
        request_span(&request, method_label(&method), &route)
    };
    let response = next.call(request).instrument(span.clone()).await?;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    if let Some(metrics) = metrics {
        metrics.record_http(&method, &route, status.as_u16(), started.elapsed().as_secs_f64());
    }
    Ok(response)
}

/// The server span of one request; its log lines carry its trace id.
fn request_span(request: &ServiceRequest, method: &'static str, route: &str) -> tracing::Span {
    let span = tracing::info_span!(
        "http.request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    crate::trace::continues(&span, request.headers().get("traceparent").and_then(|v| v.to_str().ok()));
    crate::trace::name_in_logs(&span);
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invented_methods_share_one_series() {
        let metrics = Metrics::new();
        for i in 0..1_000 {
            let method = Method::from_bytes(format!("MFOO{i}").as_bytes()).expect("a token");
            metrics.record_http(&method, "unmatched", 404, 0.001);
        }
        metrics.record_http(&Method::GET, "/health", 200, 0.001);
        let text = metrics.encode();
        let series: Vec<&str> = text.lines().filter(|l| l.starts_with("http_request_duration_seconds_count")).collect();
        let first: Vec<_> = series.iter().take(3).collect();
        assert_eq!(series.len(), 2, "one series per known method and one for the rest; first: {first:?}");
        assert!(text.contains("method=\"other\"") && text.contains("method=\"GET\""), "{first:?}");
    }

    #[test]
    fn the_catalogue_names_the_series_the_text_format_writes() {
        use prometheus_client::metrics::counter::Counter;
        let metrics = Metrics::new();
        let orders = Family::<DatabaseLabels, Counter>::default();
        metrics.register("orders", "Orders", orders.clone());
        let wait = latency_histogram();
        metrics.register_with_unit("wait", "A wait", Unit::Seconds, wait.clone());
        let catalogue = metrics.catalogue();
        let series: std::collections::BTreeSet<&str> =
            catalogue.iter().flat_map(|d| d.series.iter().map(String::as_str)).collect();
        for name in [
            "orders_total",
            "wait_seconds_bucket",
            "wait_seconds_sum",
            "wait_seconds_count",
            "http_request_duration_seconds_count",
        ] {
            assert!(series.contains(name), "{name} missing from {series:?}");
        }
        // Once each has a sample, every series the text format writes is in the catalogue.
        orders.get_or_create(&DatabaseLabels { database: "x".into() }).inc();
        wait.observe(0.1);
        metrics.record_http(&Method::GET, "/", 200, 0.001);
        let text = metrics.encode();
        let written: std::collections::BTreeSet<&str> = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.split(['{', ' ']).next())
            .filter(|name| !name.is_empty())
            .collect();
        let missing: Vec<_> = written.difference(&series).collect();
        assert!(missing.is_empty(), "written but not catalogued: {missing:?}");
    }
}
