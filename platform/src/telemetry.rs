//! JSON logs on stdout, filtered by `RUST_LOG` (default `info`). `LOG_FORMAT=pretty` gives
//! human-readable lines for local debugging. With `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans are
//! exported too ([`crate::trace`]), and the request's or event's span in each line carries
//! its `trace_id`.
//!
//! actix-http logs what a client did wrong on one connection (a head too large, bytes that
//! are not HTTP, a body cut short) at ERROR, so anyone could write ERROR lines at will. Those
//! events are taken out of the log and summed up instead: at most one WARN line per
//! [`CONNECTION_FAULT_INTERVAL`], with how many there were and the latest.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

/// Where actix-http reports connection-level faults caused by clients.
const CONNECTION_FAULTS: &str = "actix_http::h1::dispatcher";

/// At most one summary line of connection faults this often.
pub const CONNECTION_FAULT_INTERVAL: Duration = Duration::from_secs(10);

/// Installs the global subscriber for the process `service`; a second call (as in tests) is a
/// no-op. Fails only on malformed OpenTelemetry settings.
pub fn init(service: &str) -> Result<(), String> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn,actix_server=warn"));
    let pretty = std::env::var("LOG_FORMAT").is_ok_and(|f| f == "pretty");
    let export = crate::trace::ExportSettings::from_env(service)?;
    let (subscriber, faults) = subscriber(filter, pretty, std::io::stdout);
    let spans =
        export.as_ref().map(|settings| crate::trace::layer(&crate::trace::provider(settings), &settings.service));
    if subscriber.with(spans).try_init().is_ok() {
        if let Some(settings) = &export {
            tracing::info!(endpoint = %settings.endpoint, ratio = settings.ratio, "exporting spans");
        }
        // Outside the subscriber: an event cannot be logged from inside another's handling.
        let _ = std::thread::Builder::new().name("connection-faults".into()).spawn(move || {
            loop {
                std::thread::sleep(CONNECTION_FAULT_INTERVAL);
                faults.report();
            }
        });
    }
    Ok(())
}

fn subscriber<W>(
    filter: EnvFilter,
    pretty: bool,
    writer: W,
) -> (impl Subscriber + Send + Sync + for<'span> tracing_subscriber::registry::LookupSpan<'span>, Arc<ConnectionFaults>)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let lines = tracing_subscriber::fmt::layer().with_target(true).with_writer(writer);
    let lines = if pretty { lines.boxed() } else { lines.json().with_current_span(true).flatten_event(true).boxed() };
    let faults = Arc::new(ConnectionFaults::default());
    let subscriber = tracing_subscriber::registry()
        .with(filter)
        .with(lines.with_filter(filter_fn(|metadata| metadata.target() != CONNECTION_FAULTS)))
        .with(FaultCounter(Arc::clone(&faults)));
    (subscriber, faults)
}

/// actix-http's per-connection faults since the last report: how many, and the latest.
#[derive(Default)]
struct ConnectionFaults {
    pending: Mutex<(u64, String)>,
}

impl ConnectionFaults {
    /// One WARN line for the faults since the last report, if there were any.
    fn report(&self) {
        let (count, latest) = std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        if count > 0 {
            tracing::warn!(
                target: "http",
                count,
                latest = %latest,
                "refused connections whose clients sent something unusable (summed up every {} s)",
                CONNECTION_FAULT_INTERVAL.as_secs()
            );
        }
    }
}

/// Counts actix-http's per-connection events instead of logging each.
struct FaultCounter(Arc<ConnectionFaults>);

impl<S: Subscriber> Layer<S> for FaultCounter {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() != CONNECTION_FAULTS {
            return;
        }
        let mut message = Message::default();
        event.record(&mut message);
        let mut pending = self.0.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.0 += 1;
        pending.1 = message.0;
    }
}

#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_flood_of_client_faults_is_one_warning_and_other_errors_stay_errors() {
        let captured = Captured::default();
        let writer = captured.clone();
        let (subscriber, faults) = subscriber(EnvFilter::new("info"), false, move || writer.clone());
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..1000 {
                tracing::error!(target: "actix_http::h1::dispatcher", "stream error: request parse error: invalid Header provided");
            }
            tracing::error!(target: "order::repository", "a real failure");
            faults.report();
            // Nothing new since: no line.
            faults.report();
        });
        let text = String::from_utf8(captured.0.lock().expect("log").clone()).expect("utf-8");
        let lines: Vec<serde_json::Value> =
            text.lines().map(|line| serde_json::from_str(line).expect("a JSON line")).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!((lines[0]["level"].as_str(), lines[0]["message"].as_str()), (Some("ERROR"), Some("a real failure")));
        assert_eq!((lines[1]["level"].as_str(), lines[1]["count"].as_u64()), (Some("WARN"), Some(1000)), "{text}");
        assert!(lines[1]["latest"].as_str().is_some_and(|f| f.contains("invalid Header")), "{text}");
    }
}
