//! Spans that leave the process (decision 0029).
//!
//! One room, over 300 lines: the settings, the queue that exports and the helpers that write
//! spans with known times share one switch (export on or off) and one counter.
//!
//! When `OTEL_EXPORTER_OTLP_ENDPOINT` is set,
//! every span a process records is posted to that OpenTelemetry collector over OTLP/HTTP, and
//! one order is one trace across every process: the W3C `traceparent` travels in the outbox
//! row and the Kafka headers, and each hop continues it.
//!
//! Exporting never holds up a request or an event. A finished span goes into a bounded queue
//! that one thread of its own drains; a span that finds the queue full, or whose post fails
//! (the collector is down or slow), is counted in `trace_spans_total{outcome}` and let go.
//!
//! Two hops have no code running through them: an event waiting in the outbox, and a message
//! waiting in Kafka. The next hop knows when they began (the row's commit, the record's
//! timestamp) and writes their spans with those times ([`Hop`]).

use std::collections::HashMap;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use opentelemetry::Context;
use opentelemetry::global::{self, BoxedSpan};
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{
    Link, Span as _, SpanContext, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter as _, SpanProcessor};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer as _;

/// What callers name when they write spans with [`Hop`].
pub use opentelemetry::KeyValue;
pub use opentelemetry::trace::SpanKind;

/// Where spans go and how many: read from the standard OpenTelemetry variables.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportSettings {
    /// The collector's OTLP/HTTP base address (`…:4318`); spans are posted to `/v1/traces`.
    pub endpoint: String,
    /// The share of new traces recorded (`OTEL_TRACES_SAMPLER_ARG`, 0 to 1); a trace that
    /// arrives with a decision keeps it (parent-based).
    pub ratio: f64,
    /// Finished spans waiting to be posted, at most (`OTEL_BSP_MAX_QUEUE_SIZE`).
    pub queue: usize,
    /// A partly filled batch is posted this long after its first span
    /// (`OTEL_BSP_SCHEDULE_DELAY`, milliseconds). What a process killed outright loses is the
    /// spans of this last stretch, so it is short: 200 ms by default, not the standard's 5 s.
    pub delay: Duration,
    /// `service.name` (`OTEL_SERVICE_NAME`, or the process's own name).
    pub service: String,
    /// `service.instance.id`: `INSTANCE_ID` where the process has one, else its pid.
    pub instance: String,
}

/// Spans posted in one request to the collector, at most.
const BATCH: usize = 512;

/// One post to the collector gives up after this long; its spans are counted as dropped.
const POST_TIMEOUT: Duration = Duration::from_secs(3);

const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
const SAMPLER_ARG: &str = "OTEL_TRACES_SAMPLER_ARG";
const QUEUE: &str = "OTEL_BSP_MAX_QUEUE_SIZE";
const DELAY: &str = "OTEL_BSP_SCHEDULE_DELAY";
const SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
const INSTANCE: &str = "INSTANCE_ID";

/// The standard OpenTelemetry variables the export reads (and `INSTANCE_ID`), beside a
/// process's settings: `describe` lists them for the deployment checks.
pub const VARIABLES: &[&str] = &[ENDPOINT, SAMPLER_ARG, QUEUE, DELAY, SERVICE_NAME, INSTANCE];

impl ExportSettings {
    /// `None` when `OTEL_EXPORTER_OTLP_ENDPOINT` is unset or empty: spans stay in the process.
    pub fn from_env(service: &str) -> Result<Option<Self>, String> {
        Self::from_vars(service, |name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    }

    fn from_vars(service: &str, var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, String> {
        let Some(endpoint) = var(ENDPOINT) else { return Ok(None) };
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(format!(
                "OTEL_EXPORTER_OTLP_ENDPOINT must be an http:// or https:// address, not {endpoint:?}"
            ));
        }
        let ratio = parsed(&var, SAMPLER_ARG, 1.0, |r: &f64| (0.0..=1.0).contains(r), "a number from 0 to 1")?;
        let queue = parsed(&var, QUEUE, 2048, |q: &usize| (1..=1_000_000).contains(q), "a count from 1 to 1000000")?;
        let delay = parsed(&var, DELAY, 200, |ms: &u64| (1..=60_000).contains(ms), "milliseconds from 1 to 60000")?;
        Ok(Some(Self {
            endpoint: format!("{}/v1/traces", endpoint.trim_end_matches('/')),
            ratio,
            queue,
            delay: Duration::from_millis(delay),
            service: var(SERVICE_NAME).unwrap_or_else(|| service.to_owned()),
            instance: var(INSTANCE).unwrap_or_else(|| std::process::id().to_string()),
        }))
    }
}

/// The variable `name` read as a `T` that `valid` accepts, or `default` when it is unset.
fn parsed<T: std::str::FromStr>(
    var: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: T,
    valid: impl Fn(&T) -> bool,
    what: &str,
) -> Result<T, String> {
    match var(name) {
        None => Ok(default),
        Some(text) => text
            .trim()
            .parse::<T>()
            .ok()
            .filter(|v| valid(v))
            .ok_or_else(|| format!("{name} must be {what}, not {text:?}")),
    }
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SpanOutcome {
    outcome: Outcome,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum Outcome {
    exported,
    /// The queue was full: the collector is slower than the process makes spans.
    dropped_queue_full,
    /// The post failed or timed out: the collector is down or refused them.
    dropped_export_failed,
}

static SPANS: LazyLock<Family<SpanOutcome, Counter>> = LazyLock::new(Family::default);

static PROVIDER: std::sync::OnceLock<SdkTracerProvider> = std::sync::OnceLock::new();

static EXPORTING: AtomicBool = AtomicBool::new(false);

fn count(outcome: Outcome, spans: usize) {
    SPANS.get_or_create(&SpanOutcome { outcome }).inc_by(spans as u64);
}

/// `trace_spans_total{outcome}`, for a process's registry.
pub(crate) fn counters() -> Family<SpanOutcome, Counter> {
    SPANS.clone()
}

/// Whether this process exports spans.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Starts exporting: the provider every span goes through, and the tracer for the
/// `tracing` layer. Also the global tracer, which [`Hop`] uses.
pub(crate) fn provider(settings: &ExportSettings) -> SdkTracerProvider {
    let queue = Arc::new(Queue { pending: Mutex::default(), wake: Condvar::new(), capacity: settings.queue });
    let waiting = Arc::clone(&queue);
    let resource = Resource::builder()
        .with_service_name(settings.service.clone())
        .with_attributes([
            KeyValue::new("service.instance.id", settings.instance.clone()),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        ])
        .build();
    let (endpoint, delay) = (settings.endpoint.clone(), settings.delay);
    let for_exporter = resource.clone();
    // The exporter's blocking HTTP client is made on the thread that uses it: made inside the
    // async runtime it would refuse to be dropped there.
    let _ = std::thread::Builder::new().name("span-export".into()).spawn(move || {
        match SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .with_timeout(POST_TIMEOUT)
            .build()
        {
            Ok(mut exporter) => {
                exporter.set_resource(&for_exporter);
                drain(&waiting, &exporter, delay);
            }
            Err(error) => tracing::error!(%error, "cannot create the span exporter; spans are dropped"),
        }
    });
    let provider = SdkTracerProvider::builder()
        .with_span_processor(Exporting { queue })
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(settings.ratio))))
        .with_resource(resource)
        .build();
    global::set_tracer_provider(provider.clone());
    let _ = PROVIDER.set(provider.clone());
    EXPORTING.store(true, Ordering::Relaxed);
    provider
}

/// The `tracing` layer that turns spans into OpenTelemetry spans.
pub(crate) fn layer<S>(provider: &SdkTracerProvider, service: &str) -> impl tracing_subscriber::Layer<S> + use<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    // What a span costs is paid on every poll of the future it instruments, so the layer keeps
    // only what the waterfall shows: no log events copied into spans (the log lines carry the
    // trace id), no code locations, no busy/idle timings, and no OpenTelemetry context switched
    // on each poll (nothing reads `Context::current`: parents are passed explicitly).
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(service.to_owned()))
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_location(false)
        .with_context_activation(false)
        .with_filter(tracing_subscriber::filter::filter_fn(|metadata| metadata.is_span()))
}

/// Finished spans on their way to the export thread. A span is appended under a lock that
/// nobody holds for long, and nothing wakes the thread for it: the thread looks every `delay`,
/// or when a batch's worth has gathered or someone asks for a flush. (A channel woke it for
/// every span: a futex call and a context switch per span, about a tenth of the order
/// service's CPU at 200 orders/s.)
#[derive(Debug)]
struct Queue {
    pending: Mutex<Pending>,
    wake: Condvar,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Pending {
    spans: Vec<SpanData>,
    /// Who waits for the spans queued before they asked to be posted.
    flushes: Vec<std::sync::mpsc::Sender<()>>,
    closed: bool,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The span processor: hands each finished span to the export thread, or counts it dropped.
#[derive(Debug)]
struct Exporting {
    queue: Arc<Queue>,
}

impl SpanProcessor for Exporting {
    fn on_start(&self, _: &mut opentelemetry_sdk::trace::Span, _: &Context) {}

    fn on_end(&self, span: SpanData) {
        let mut pending = self.queue.lock();
        if pending.spans.len() >= self.queue.capacity {
            drop(pending);
            count(Outcome::dropped_queue_full, 1);
            return;
        }
        pending.spans.push(span);
        if pending.spans.len() == BATCH {
            self.queue.wake.notify_one();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.flush(POST_TIMEOUT)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.flush(timeout)
    }
}

impl Exporting {
    /// Posts what is queued, waiting at most `timeout`.
    fn flush(&self, timeout: Duration) -> OTelSdkResult {
        let (done, finished) = std::sync::mpsc::channel();
        self.queue.lock().flushes.push(done);
        self.queue.wake.notify_one();
        finished.recv_timeout(timeout).map_err(|_| OTelSdkError::Timeout(timeout))
    }
}

impl Drop for Exporting {
    fn drop(&mut self) {
        self.queue.lock().closed = true;
        self.queue.wake.notify_one();
    }
}

/// The export thread: every `delay` (sooner for a full batch or a flush) it takes what is
/// queued and posts it, at most [`BATCH`] spans a post. A span waits at most `delay` plus the
/// posts ahead of it.
fn drain(queue: &Queue, exporter: &SpanExporter, delay: Duration) {
    let mut failing = false;
    loop {
        let (spans, flushes, closed) = {
            let mut pending = queue.lock();
            if pending.spans.len() < BATCH && pending.flushes.is_empty() && !pending.closed {
                pending = queue.wake.wait_timeout(pending, delay).unwrap_or_else(PoisonError::into_inner).0;
            }
            (std::mem::take(&mut pending.spans), std::mem::take(&mut pending.flushes), pending.closed)
        };
        let mut spans = spans.into_iter().peekable();
        while spans.peek().is_some() {
            post(exporter, spans.by_ref().take(BATCH).collect(), &mut failing);
        }
        for done in flushes {
            let _ = done.send(());
        }
        if closed {
            return;
        }
    }
}

/// One post; a failure is logged when it starts and when it ends, not for every batch.
fn post(exporter: &SpanExporter, batch: Vec<SpanData>, failing: &mut bool) {
    let spans = batch.len();
    match futures::executor::block_on(exporter.export(batch)) {
        Ok(()) => {
            count(Outcome::exported, spans);
            if std::mem::take(failing) {
                tracing::info!("the trace collector takes spans again");
            }
        }
        Err(error) => {
            count(Outcome::dropped_export_failed, spans);
            if !std::mem::replace(failing, true) {
                tracing::warn!(%error, spans, "cannot post spans to the trace collector; dropping them until it answers");
            }
        }
    }
}

/// Posts the spans still queued, for a process about to exit.
pub fn flush() {
    if let Some(provider) = PROVIDER.get() {
        let _ = provider.force_flush();
    }
}

/// The context a well-formed W3C `traceparent` names.
pub fn context_of(traceparent: &str) -> Option<SpanContext> {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    let span = context.span().span_context().clone();
    span.is_valid().then_some(span)
}

/// `span` as a W3C `traceparent`.
pub fn traceparent_of(span: &SpanContext) -> Option<String> {
    span.is_valid().then(|| format!("00-{}-{}-{:02x}", span.trace_id(), span.span_id(), span.trace_flags().to_u8()))
}

/// The `traceparent` of the current span, for what it causes elsewhere (an outbox row);
/// `None` when spans are not exported.
pub fn current() -> Option<String> {
    if !exporting() {
        return None;
    }
    traceparent_of(tracing::Span::current().context().span().span_context())
}

/// `trace` continued from the current span: what a write records for the hop it causes (an
/// outbox row's parent is the statement that wrote it).
pub fn from_here(trace: &schema::envelope::Trace) -> schema::envelope::Trace {
    schema::envelope::Trace {
        correlation_id: trace.correlation_id.clone(),
        traceparent: current().or_else(|| trace.traceparent.clone()),
    }
}

/// Makes `span` (not yet entered) a child of `traceparent`, the context of the hop before.
pub fn continues(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(parent) = traceparent.filter(|_| exporting()).and_then(context_of) {
        let _ = span.set_parent(Context::new().with_remote_span_context(parent));
    }
}

/// Records the trace id of `span` (declared with an empty `trace_id` field, its parent set)
/// so that the log lines inside it carry it.
pub fn name_in_logs(span: &tracing::Span) {
    if exporting() {
        span.record("trace_id", tracing::field::display(context(span).trace_id()));
    }
}

/// Links `span` to each of `contexts` (a batch to the events it carries).
pub fn link(span: &tracing::Span, contexts: impl IntoIterator<Item = SpanContext>) {
    if exporting() {
        for context in contexts {
            span.add_link(context);
        }
    }
}

/// The OpenTelemetry context of a `tracing` span, for links.
pub fn context(span: &tracing::Span) -> SpanContext {
    span.context().span().span_context().clone()
}

/// A hop written by the code around it rather than inside it: started and ended at given
/// times, the child of a `traceparent` from another process. Without export, or without a
/// well-formed parent, it records nothing.
pub struct Hop {
    span: Option<BoxedSpan>,
}

impl std::fmt::Debug for Hop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hop").field("context", &self.context()).finish()
    }
}

impl Hop {
    /// Starts `name` at `started`, under `parent`.
    pub fn start(
        name: &'static str,
        kind: SpanKind,
        parent: Option<&str>,
        started: SystemTime,
        attributes: Vec<KeyValue>,
    ) -> Self {
        let Some(parent) = parent.filter(|_| exporting()).and_then(context_of) else { return Self { span: None } };
        let tracer = global::tracer("order-system");
        let span = tracer
            .span_builder(name)
            .with_kind(kind)
            .with_start_time(started)
            .with_attributes(attributes)
            .start_with_context(&tracer, &Context::new().with_remote_span_context(parent));
        Self { span: Some(span) }
    }

    /// A hop that began at `started` and ended at `ended`, in one call.
    pub fn record(
        name: &'static str,
        kind: SpanKind,
        parent: Option<&str>,
        (started, ended): (SystemTime, SystemTime),
        attributes: Vec<KeyValue>,
    ) -> Option<SpanContext> {
        let hop = Self::start(name, kind, parent, started, attributes);
        let context = hop.context();
        hop.end(ended, None);
        context
    }

    /// This hop's context, for the next hop's parent or a batch's link.
    pub fn context(&self) -> Option<SpanContext> {
        self.span.as_ref().map(|span| span.span_context().clone()).filter(SpanContext::is_valid)
    }

    /// This hop's context as a `traceparent`.
    pub fn traceparent(&self) -> Option<String> {
        self.context().as_ref().and_then(traceparent_of)
    }

    /// Ends the hop at `ended`; `error` marks it failed.
    pub fn end(self, ended: SystemTime, error: Option<&str>) {
        if let Some(mut span) = self.span {
            if let Some(error) = error {
                span.set_status(Status::error(error.to_owned()));
            }
            span.end_with_timestamp(ended);
        }
    }
}

/// A span for work done for many traces at once (a relay's batch, a consumer's batch
/// transaction): a trace of its own, linked to each of theirs.
pub fn batch(
    name: &'static str,
    (started, ended): (SystemTime, SystemTime),
    links: Vec<SpanContext>,
    attributes: Vec<KeyValue>,
) {
    if !exporting() {
        return;
    }
    let tracer = global::tracer("order-system");
    let mut span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Internal)
        .with_start_time(started)
        .with_attributes(attributes)
        .with_links(links.into_iter().map(Link::with_context).collect())
        .start_with_context(&tracer, &Context::new());
    span.end_with_timestamp(ended);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect();
        move |name| pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn export_is_off_without_an_endpoint_and_checked_with_one() {
        assert_eq!(ExportSettings::from_vars("order", vars(&[])), Ok(None));
        let on = ExportSettings::from_vars("order", vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/")]))
            .expect("valid")
            .expect("on");
        assert_eq!(
            (on.endpoint.as_str(), on.ratio, on.queue, on.delay),
            ("http://127.0.0.1:4318/v1/traces", 1.0, 2048, Duration::from_millis(200))
        );
        assert_eq!(on.service, "order");
        for (name, value) in [
            ("OTEL_TRACES_SAMPLER_ARG", "2"),
            ("OTEL_TRACES_SAMPLER_ARG", "half"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
            ("OTEL_BSP_SCHEDULE_DELAY", "0"),
            ("OTEL_BSP_SCHEDULE_DELAY", "1s"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:4318"),
        ] {
            let endpoint = if name == "OTEL_EXPORTER_OTLP_ENDPOINT" { value } else { "http://c:4318" };
            let error =
                ExportSettings::from_vars("order", vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint), (name, value)]))
                    .expect_err(value);
            assert!(error.contains(name), "{error}");
        }
    }

    #[test]
    fn a_span_that_finds_the_queue_full_is_dropped_and_counted() {
        let queue = Arc::new(Queue { pending: Mutex::default(), wake: Condvar::new(), capacity: BATCH + 2 });
        let provider =
            SdkTracerProvider::builder().with_span_processor(Exporting { queue: Arc::clone(&queue) }).build();
        let tracer = provider.tracer("test");
        let full = || SPANS.get_or_create(&SpanOutcome { outcome: Outcome::dropped_queue_full }).get();
        let before = full();
        for _ in 0..BATCH + 5 {
            tracer.start("work").end();
        }
        assert_eq!(queue.lock().spans.len(), BATCH + 2);
        assert_eq!(full() - before, 3);
        // No thread drains this queue: do not wait for one to answer the shutdown's flush.
        let _ = provider.shutdown_with_timeout(Duration::from_millis(1));
    }

    #[test]
    fn a_traceparent_reads_back_as_itself_and_garbage_names_nothing() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = context_of(text).expect("well-formed");
        assert_eq!(traceparent_of(&context).as_deref(), Some(text));
        for bad in ["", "00-zz-00f067aa0ba902b7-01", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"] {
            assert!(context_of(bad).is_none(), "{bad}");
        }
    }
}
