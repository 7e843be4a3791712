//! The latency alert's signal: the order API's response times over a rolling window,
//! computed by the server so that every viewer of the web page sees the same thing.
//!
//! Only `POST /orders` counts, and only when it was not refused with a 4xx: it is what a
//! shopper waits on, and the page's own polling (`GET /orders`, many times a second across
//! viewers) or a flood of fast refusals (no token, over the rate) would otherwise dilute a
//! slow inventory into a green light. The Prometheus rule `OrderApiSlow` uses the same
//! selection.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// `ORDER__LATENCY_ALERT__*`.
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize)]
pub struct LatencyAlertSettings {
    /// The rolling window's length.
    #[serde(default = "default_window_secs")]
    pub window_secs: u64,
    /// The alert turns red when the window's average exceeds this.
    #[serde(default = "default_threshold_ms")]
    pub threshold_ms: u64,
}

impl Default for LatencyAlertSettings {
    fn default() -> Self {
        Self { window_secs: default_window_secs(), threshold_ms: default_threshold_ms() }
    }
}

fn default_window_secs() -> u64 {
    30
}

fn default_threshold_ms() -> u64 {
    1_000
}

/// Most samples kept: at 1,000 orders/s a 30 s window holds 30,000.
const MAX_SAMPLES: usize = 200_000;

/// The history's step and length: 10 s averages over the last 5 minutes, for the page's chart.
pub const HISTORY_STEP: Duration = Duration::from_secs(10);
const HISTORY_STEPS: u64 = 30;

/// Response times of the last `window`, oldest first, and the averages of the last minutes.
pub struct LatencyWindow {
    window: Duration,
    threshold: Duration,
    samples: Mutex<VecDeque<(Instant, Duration)>>,
    /// Bucket `n` holds the requests answered in `[epoch + n·step, epoch + (n+1)·step)`.
    epoch: Instant,
    history: Mutex<VecDeque<Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    index: u64,
    total: Duration,
    count: u32,
}

/// One step of the latency history.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LatencyPoint {
    /// How long ago the step ended (0: the step in progress).
    pub seconds_ago: u64,
    pub count: u32,
    /// The step's average; none when no request was answered in it.
    pub avg_ms: Option<f64>,
}

/// What `/stats/latency` returns.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LatencySummary {
    pub window_secs: f64,
    pub threshold_ms: f64,
    /// Requests answered within the window.
    pub count: usize,
    /// Their average and 95th percentile (nearest rank) response time; 0 when empty.
    pub avg_ms: f64,
    pub p95_ms: f64,
    /// `SLOW` when the average exceeds the threshold, else `OK` (an empty window is OK).
    pub status: &'static str,
    /// 10 s averages over the last 5 minutes, oldest first.
    pub history: Vec<LatencyPoint>,
}

impl LatencyWindow {
    pub fn new(settings: LatencyAlertSettings) -> Self {
        Self {
            window: Duration::from_secs(settings.window_secs.max(1)),
            threshold: Duration::from_millis(settings.threshold_ms),
            samples: Mutex::default(),
            epoch: Instant::now(),
            history: Mutex::default(),
        }
    }

    fn step_of(&self, at: Instant) -> u64 {
        let elapsed = at.saturating_duration_since(self.epoch).as_millis();
        u64::try_from(elapsed / HISTORY_STEP.as_millis()).unwrap_or(u64::MAX)
    }

    fn remember(&self, at: Instant, took: Duration) {
        let index = self.step_of(at);
        let mut history = self.history.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match history.back_mut() {
            Some(bucket) if bucket.index == index => {
                bucket.total += took;
                bucket.count += 1;
            }
            _ => history.push_back(Bucket { index, total: took, count: 1 }),
        }
        while history.front().is_some_and(|b| b.index + HISTORY_STEPS <= index) {
            history.pop_front();
        }
    }

    /// The last [`HISTORY_STEPS`] steps up to `now`'s, oldest first, empty ones included.
    fn history(&self, now: Instant) -> Vec<LatencyPoint> {
        let current = self.step_of(now);
        let history = self.history.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (current.saturating_sub(HISTORY_STEPS - 1)..=current)
            .map(|index| {
                let bucket = history.iter().find(|b| b.index == index);
                LatencyPoint {
                    seconds_ago: (current - index) * HISTORY_STEP.as_secs(),
                    count: bucket.map_or(0, |b| b.count),
                    avg_ms: bucket.map(|b| millis(b.total / b.count.max(1))),
                }
            })
            .collect()
    }

    /// Records a request answered at `at` after `took`.
    pub fn record(&self, at: Instant, took: Duration) {
        self.remember(at, took);
        let mut samples = self.lock();
        samples.push_back((at, took));
        if samples.len() > MAX_SAMPLES {
            samples.pop_front();
        }
        Self::expire(&mut samples, at, self.window);
    }

    /// The window ending at `now`: requests answered less than `window` before it.
    pub fn summary(&self, now: Instant) -> LatencySummary {
        let mut samples = self.lock();
        Self::expire(&mut samples, now, self.window);
        let mut took: Vec<Duration> = samples.iter().map(|(_, took)| *took).collect();
        drop(samples);
        took.sort_unstable();
        let count = took.len();
        let (avg, p95) = if count == 0 {
            (Duration::ZERO, Duration::ZERO)
        } else {
            let total: Duration = took.iter().sum();
            // Nearest rank: the smallest value with at least 95% of the samples at or below it.
            let rank = (count * 95).div_ceil(100).max(1);
            (total / u32::try_from(count).unwrap_or(u32::MAX), took[rank - 1])
        };
        LatencySummary {
            window_secs: self.window.as_secs_f64(),
            threshold_ms: millis(self.threshold),
            count,
            avg_ms: millis(avg),
            p95_ms: millis(p95),
            status: if avg > self.threshold { "SLOW" } else { "OK" },
            history: self.history(now),
        }
    }

    fn expire(samples: &mut VecDeque<(Instant, Duration)>, now: Instant, window: Duration) {
        while samples.front().is_some_and(|(at, _)| now.saturating_duration_since(*at) >= window) {
            samples.pop_front();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Instant, Duration)>> {
        self.samples.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_nanos() as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window() -> LatencyWindow {
        LatencyWindow::new(LatencyAlertSettings { window_secs: 30, threshold_ms: 1_000 })
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn an_empty_window_is_ok_with_zeros() {
        let summary = window().summary(Instant::now());
        assert_eq!((summary.count, summary.avg_ms, summary.p95_ms, summary.status), (0, 0.0, 0.0, "OK"));
    }

    #[test]
    fn an_average_of_exactly_one_second_is_ok_and_a_millisecond_more_is_slow() {
        let start = Instant::now();
        let exactly = window();
        exactly.record(start, ms(500));
        exactly.record(start, ms(1_500));
        let summary = exactly.summary(start);
        assert_eq!((summary.avg_ms, summary.status), (1_000.0, "OK"));

        let above = window();
        above.record(start, ms(500));
        above.record(start, ms(1_502));
        let summary = above.summary(start);
        assert_eq!((summary.avg_ms, summary.status), (1_001.0, "SLOW"));
    }

    #[test]
    fn the_window_slides_samples_leave_exactly_when_they_are_window_old() {
        let start = Instant::now();
        let window = window();
        window.record(start, ms(3_000)); // slow
        window.record(start + Duration::from_secs(10), ms(100));
        assert_eq!(window.summary(start + Duration::from_secs(10)).status, "SLOW");

        let just_before = window.summary(start + Duration::from_secs(30) - ms(1));
        assert_eq!((just_before.count, just_before.status), (2, "SLOW"));
        // At 30 s the slow sample is a full window old and no longer counts.
        let at_the_boundary = window.summary(start + Duration::from_secs(30));
        assert_eq!((at_the_boundary.count, at_the_boundary.avg_ms, at_the_boundary.status), (1, 100.0, "OK"));
        let later = window.summary(start + Duration::from_secs(40));
        assert_eq!((later.count, later.status), (0, "OK"));
    }

    #[test]
    fn the_history_averages_each_ten_seconds_of_the_last_five_minutes() {
        let window = window();
        let start = window.epoch;
        window.record(start + Duration::from_secs(1), ms(100));
        window.record(start + Duration::from_secs(9), ms(300));
        window.record(start + Duration::from_secs(25), ms(50));
        let history = window.summary(start + Duration::from_secs(25)).history;
        let points: Vec<_> = history.iter().map(|p| (p.seconds_ago, p.count, p.avg_ms)).collect();
        assert_eq!(points, [(20, 2, Some(200.0)), (10, 0, None), (0, 1, Some(50.0))]);

        let later = window.summary(start + Duration::from_secs(305)).history;
        assert_eq!(later.len(), 30, "five minutes of steps");
        assert_eq!(later.first().map(|p| p.seconds_ago), Some(290));
        let counted: Vec<_> = later.iter().filter(|p| p.count > 0).map(|p| (p.seconds_ago, p.count)).collect();
        assert_eq!(counted, [(280, 1)], "second 25's step is 280 s ago; seconds 1 and 9 left the history");
    }

    #[test]
    fn p95_is_the_nearest_rank() {
        let start = Instant::now();
        let window = window();
        for n in 1..=100 {
            window.record(start, ms(n));
        }
        let summary = window.summary(start);
        assert_eq!((summary.count, summary.p95_ms, summary.avg_ms), (100, 95.0, 50.5));
        window.record(start, ms(1_000));
        assert_eq!(window.summary(start).p95_ms, 96.0, "101 samples: rank 96");
    }

    #[test]
    fn one_sample_is_its_own_average_and_p95() {
        let start = Instant::now();
        let window = window();
        window.record(start, ms(1_200));
        let summary = window.summary(start + Duration::from_secs(1));
        assert_eq!((summary.count, summary.avg_ms, summary.p95_ms, summary.status), (1, 1_200.0, 1_200.0, "SLOW"));
    }
}
