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

/// The same backoff for a loop that runs a session (a listener, a relay's database session)
/// again after each failure: ask [`next_wait`](Self::next_wait) for the wait, log it, then
/// [`sleep`](Self::sleep).
pub struct Backoff(backon::ExponentialBackoff);

impl Default for Backoff {
    fn default() -> Self {
        Self(backon::BackoffBuilder::build(dependency_backoff()))
    }
}

impl Backoff {
    /// How long to wait before the next attempt (200 ms doubling to 5 s, with jitter).
    pub fn next_wait(&mut self) -> Duration {
        self.0.next().unwrap_or(Duration::from_secs(5))
    }

    /// Waits `delay`; false if shutdown came first.
    pub async fn sleep(delay: Duration, shutdown: &CancellationToken) -> bool {
        tokio::select! {
            () = shutdown.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Backoff;

    #[test]
    fn waits_grow_from_a_fifth_of_a_second_to_five_seconds() {
        let mut backoff = Backoff::default();
        let waits: Vec<Duration> = (0..12).map(|_| backoff.next_wait()).collect();
        assert!(waits[0] >= Duration::from_millis(200) && waits[0] < Duration::from_millis(400), "{waits:?}");
        assert!(waits.iter().all(|w| *w <= Duration::from_secs(10)), "jitter adds at most the delay itself: {waits:?}");
        assert!(waits[11] >= Duration::from_secs(5), "{waits:?}");
    }
}
