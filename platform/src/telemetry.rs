//! JSON logs on stdout, filtered by `RUST_LOG` (default `info`). `LOG_FORMAT=pretty` gives
//! human-readable lines for local debugging.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; a second call (as in tests) is a no-op.
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn,actix_server=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(true);
    let _already_set = if std::env::var("LOG_FORMAT").is_ok_and(|f| f == "pretty") {
        builder.try_init()
    } else {
        builder.json().with_current_span(true).flatten_event(true).try_init()
    };
}
