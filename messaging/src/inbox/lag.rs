//! Consumer lag: every few seconds, for each assigned partition, the high watermark minus the
//! next offset this consumer will read; and how long each partition's oldest failing event
//! has been failing.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use platform::kafka::GroupConsumer;
use rdkafka::Offset;
use rdkafka::consumer::Consumer as _;
use tokio_util::sync::CancellationToken;

use super::Stalls;
use crate::metrics::ConsumerMetrics;

const EVERY: Duration = Duration::from_secs(5);

pub(super) async fn report_lag(
    consumer: Arc<GroupConsumer>,
    metrics: ConsumerMetrics,
    stalls: Arc<Stalls>,
    shutdown: CancellationToken,
) {
    // Partitions shown as stalled at the last report, to show 0 once they move again.
    let mut stalled = HashSet::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(EVERY) => {}
        }
        let now: HashSet<(String, i32)> = stalls
            .oldest()
            .into_iter()
            .map(|stall| {
                metrics.stalled(&stall.topic, stall.partition, stall.failing_for.as_secs() as i64);
                (stall.topic, stall.partition)
            })
            .collect();
        for (topic, partition) in stalled.difference(&now) {
            metrics.stalled(topic, *partition, 0);
        }
        stalled = now;
        let consumer = Arc::clone(&consumer);
        let metrics = metrics.clone();
        // The client's calls block (watermarks ask the broker).
        let _ = tokio::task::spawn_blocking(move || {
            let Ok(positions) = consumer.position() else { return };
            for element in positions.elements() {
                let Ok((_, high)) =
                    consumer.fetch_watermarks(element.topic(), element.partition(), Duration::from_secs(1))
                else {
                    continue;
                };
                if let Some(lag) = lag_of(element.offset(), high) {
                    metrics.lag(element.topic(), element.partition(), lag);
                }
            }
        })
        .await;
    }
}

/// Messages between the consumer's position and the partition's end. A partition this member
/// has not read from yet has no position (`Offset::Invalid`, raw −1001): its lag is not known
/// here, and is not reported — subtracting the raw value once showed a lag of 1,001 for every
/// untouched partition.
fn lag_of(position: Offset, high: i64) -> Option<i64> {
    match position {
        Offset::Offset(position) => Some((high - position).max(0)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::Offset;

    use super::lag_of;

    #[test]
    fn lag_is_the_distance_to_the_end_and_unknown_without_a_position() {
        assert_eq!(lag_of(Offset::Offset(40), 42), Some(2));
        assert_eq!(lag_of(Offset::Offset(42), 42), Some(0));
        assert_eq!(lag_of(Offset::Offset(50), 42), Some(0), "a stale watermark is not a negative lag");
        assert_eq!(lag_of(Offset::Invalid, 0), None);
        assert_eq!(lag_of(Offset::Beginning, 7), None);
    }
}
