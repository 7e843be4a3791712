//! Waiting for a dependency that is not there yet, the same way everywhere: exponential
//! backoff with jitter, one log line per failed attempt, and give up only on shutdown.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio_util::sync::CancellationToken;

/// The backoff used to wait for Postgres or the broker: 200 ms doubling to 5 s, with jitter,
/// forever.
pub fn dependency_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
}

/// Runs `attempt` until it succeeds, logging each failure with `what`. Returns `None` if
/// shutdown was requested first.
pub async fn until_ready<T, E, F, Fut>(what: &str, shutdown: &CancellationToken, attempt: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let retried = attempt.retry(dependency_backoff()).notify(|error, wait| {
        tracing::warn!(dependency = what, %error, retry_in_ms = wait.as_millis() as u64, "{what} is not ready yet");
    });
    tokio::select! {
        result = retried => result.ok(),
        () = shutdown.cancelled() => None,
    }
}
