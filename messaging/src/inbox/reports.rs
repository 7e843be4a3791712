//! The errors a consumer's client reports between messages, and what the loop does with them.
//!
//! librdkafka queues an error event for each failed connection attempt and each time every
//! broker is down. These events wait in the consumer's queue in front of the messages. The
//! client reconnects by itself, so they are reports, not ends, and the loop takes them as fast
//! as they come. It once waited 200 ms after each one. A broker that was away for 40 s left
//! hundreds of them queued, and when it came back the consumer spent the next two minutes
//! reading stale "all brokers are down" reports instead of joining its group (the late-broker
//! process test's failure). The log shows one line a second at most, with how many were not
//! shown. A client that reports faster than [`BURST`] a second pauses [`PAUSE`] every
//! [`BURST`], so one stuck reporting cannot spin a core.

use std::time::Duration;

use rdkafka::error::KafkaError;
use tokio::time::Instant;

/// Reports taken in one second before the loop pauses.
pub const BURST: u32 = 100;
/// How long it pauses then.
pub const PAUSE: Duration = Duration::from_millis(100);

/// The reports seen in the current second.
#[derive(Debug)]
pub struct ClientReports {
    second: Instant,
    in_second: u32,
    /// Reports since the last one logged.
    unlogged: u64,
}

impl Default for ClientReports {
    fn default() -> Self {
        Self { second: Instant::now(), in_second: 0, unlogged: 0 }
    }
}

impl ClientReports {
    /// Takes one report: logs it if it is the first of its second, pauses if the client
    /// floods.
    pub async fn take(&mut self, error: &KafkaError) {
        if self.second.elapsed() >= Duration::from_secs(1) {
            self.second = Instant::now();
            self.in_second = 0;
        }
        self.in_second += 1;
        if self.in_second == 1 {
            tracing::warn!(%error, not_shown_since_last = self.unlogged, "kafka consumer error; continuing");
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
        }
        if self.in_second.is_multiple_of(BURST) {
            tokio::time::sleep(PAUSE).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};

    use super::*;

    /// A backlog built while the broker was away is read through in about a second of
    /// pauses, not in a fifth of a second per report (which took 200 s for these 1,000).
    #[tokio::test(start_paused = true)]
    async fn a_backlog_of_reports_is_read_through_at_once() {
        let error = KafkaError::MessageConsumption(RDKafkaErrorCode::AllBrokersDown);
        let mut reports = ClientReports::default();
        let started = Instant::now();
        for _ in 0..1_000 {
            reports.take(&error).await;
        }
        let took = started.elapsed();
        assert!(took <= Duration::from_millis(1_100), "1,000 reports took {took:?}");
        assert!(took >= PAUSE, "a flood pauses at least once: {took:?}");
    }

    /// Reports that come slowly are each logged, and none makes the loop wait.
    #[tokio::test(start_paused = true)]
    async fn reports_a_second_apart_never_pause() {
        let error = KafkaError::MessageConsumption(RDKafkaErrorCode::BrokerTransportFailure);
        let mut reports = ClientReports::default();
        for _ in 0..5 {
            let before = Instant::now();
            reports.take(&error).await;
            assert_eq!(before.elapsed(), Duration::ZERO);
            assert_eq!(reports.unlogged, 0, "each one is the first of its second");
            tokio::time::advance(Duration::from_secs(1)).await;
        }
    }
}
