//! A replay: a range of one topic read with a reader of its own (outside the group) and applied
//! through the same inbox transaction as the consumer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use platform::db::PgPool;
use platform::kafka::GroupConsumer;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::{Message as _, Offset, TopicPartitionList};
use schema::RawEnvelope;

use super::{BROKER_TIMEOUT, BUSY_ATTEMPTS, ControlError, Range, ReplayReport, ReplayRequest, STALL_TIMEOUT};
use crate::inbox::{Coordinates, Failure, Handler, Outcome, apply_once};

pub(super) struct Replay<H> {
    pub(super) consumer: Arc<GroupConsumer>,
    pub(super) handler: Arc<H>,
    pub(super) pool: PgPool,
    pub(super) reader: StreamConsumer,
    pub(super) group: String,
}

impl<H: Handler> Replay<H> {
    pub(super) async fn run(self, request: ReplayRequest) -> Result<ReplayReport, ControlError> {
        let topic = request.topic.clone();
        // The broker calls block: off the async threads.
        let (ranges, this) = tokio::task::spawn_blocking(move || {
            let ranges = self.ranges(&request);
            (ranges, self)
        })
        .await
        .map_err(|e| ControlError::Stalled(format!("the replay stopped: {e}")))?;
        let ranges = ranges?;
        let mut report = ReplayReport { topic: topic.clone(), ranges: ranges.clone(), ..Default::default() };
        if ranges.is_empty() {
            return Ok(report);
        }
        let mut assignment = TopicPartitionList::new();
        for range in &ranges {
            assignment.add_partition_offset(&topic, range.partition, Offset::Offset(range.from))?;
        }
        this.reader.assign(&assignment)?;
        let mut remaining: BTreeMap<i32, i64> = ranges.iter().map(|r| (r.partition, r.to)).collect();
        while !remaining.is_empty() {
            let message = match tokio::time::timeout(STALL_TIMEOUT, this.reader.recv()).await {
                Err(_) => {
                    return Err(ControlError::Stalled(format!(
                        "nothing received for {} s with {} partitions unfinished; replayed so far: {} read",
                        STALL_TIMEOUT.as_secs(),
                        remaining.len(),
                        report.read
                    )));
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, "replay reader error; continuing");
                    continue;
                }
                Ok(Ok(message)) => message.detach(),
            };
            let partition = message.partition();
            let Some(&end) = remaining.get(&partition) else { continue };
            if message.offset() >= end {
                remaining.remove(&partition);
                continue;
            }
            report.read += 1;
            this.apply(&message, &mut report).await;
            if message.offset() + 1 >= end {
                remaining.remove(&partition);
            }
        }
        Ok(report)
    }

    /// Where each partition's replay starts and ends: from the asked offset (or the first at
    /// or after the asked time, never before the oldest kept) to the group's committed offset,
    /// or to the first event at or after `until_time` if that comes earlier.
    fn ranges(&self, request: &ReplayRequest) -> Result<Vec<Range>, ControlError> {
        let topic = request.topic.as_str();
        let metadata = self.reader.fetch_metadata(Some(topic), BROKER_TIMEOUT)?;
        let known: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        let partitions = match &request.partitions {
            None => known.clone(),
            Some(asked) => {
                if let Some(unknown) = asked.iter().find(|p| !known.contains(p)) {
                    return Err(ControlError::Invalid(format!("{topic} has no partition {unknown}")));
                }
                asked.clone()
            }
        };
        let mut list = TopicPartitionList::new();
        for &partition in &partitions {
            list.add_partition(topic, partition);
        }
        let committed = self.consumer.committed_offsets(list, BROKER_TIMEOUT)?;
        let starts = request.from_time.map(|time| self.offsets_at(topic, &partitions, time)).transpose()?;
        let ends = request.until_time.map(|time| self.offsets_at(topic, &partitions, time)).transpose()?;
        let mut ranges = Vec::new();
        for &partition in &partitions {
            let (low, _) = self.reader.fetch_watermarks(topic, partition, BROKER_TIMEOUT)?;
            let mut to = match committed.find_partition(topic, partition).map(|e| e.offset()) {
                Some(Offset::Offset(offset)) => offset,
                _ => continue, // the group has not finished anything here yet
            };
            // No event at or after `until_time` on a partition: its end stays the committed offset.
            if let Some(Offset::Offset(end)) =
                ends.as_ref().and_then(|e| e.find_partition(topic, partition)).map(|e| e.offset())
            {
                to = to.min(end);
            }
            let from = match (&starts, request.from_offset) {
                (Some(starts), _) => match starts.find_partition(topic, partition).map(|e| e.offset()) {
                    Some(Offset::Offset(offset)) => offset,
                    _ => continue, // nothing at or after that time
                },
                (None, Some(offset)) => offset,
                (None, None) => continue,
            };
            let from = from.max(low);
            if from < to {
                ranges.push(Range { partition, from, to });
            }
        }
        tracing::info!(group = self.group, topic, ?ranges, "replay ranges");
        Ok(ranges)
    }

    /// Per partition, the offset of the first event stamped at or after `time` (`Offset::End`
    /// where there is none).
    fn offsets_at(
        &self,
        topic: &str,
        partitions: &[i32],
        time: DateTime<Utc>,
    ) -> Result<TopicPartitionList, ControlError> {
        let mut at = TopicPartitionList::new();
        for &partition in partitions {
            at.add_partition_offset(topic, partition, Offset::Offset(time.timestamp_millis()))?;
        }
        Ok(self.reader.offsets_for_times(at, BROKER_TIMEOUT)?)
    }

    /// One event through the inbox transaction, retried while the database is busy.
    async fn apply(&self, message: &rdkafka::message::OwnedMessage, report: &mut ReplayReport) {
        let from =
            Coordinates { topic: message.topic().to_owned(), partition: message.partition(), offset: message.offset() };
        let event = match RawEnvelope::from_slice(message.payload().unwrap_or_default()) {
            Ok(event) => event,
            Err(_) => {
                report.unreadable += 1;
                return;
            }
        };
        for attempt in 1..=BUSY_ATTEMPTS {
            let result = match self.pool.get().await {
                Ok(mut conn) => apply_once(&mut conn, &*self.handler, &event, &from).await,
                Err(error) => Err(crate::inbox::HandleError::Unavailable(error.to_string())),
            };
            match result {
                Ok(Outcome::Processed) => {
                    report.applied += 1;
                    return;
                }
                Ok(Outcome::Duplicate) => {
                    report.duplicates += 1;
                    return;
                }
                Err(error) if error.failure() == Failure::Busy && attempt < BUSY_ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(error) => {
                    tracing::warn!(%error, partition = from.partition, offset = from.offset, "replayed event not applied");
                    report.failed += 1;
                    return;
                }
            }
        }
    }
}
