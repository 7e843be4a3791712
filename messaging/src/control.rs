//! What an operator can do to a service's inbox consumer, behind the admin token (decision
//! 0015): see its state, **pause** and **resume** it, **replay** a range of one of its topics
//! into it, and list and **redrive** its dead letters (what `tools`' `dlq` does, from the same
//! place as the rest).
//!
//! One room for now: the controls and their routes share one error type and one set of
//! checks (issue 36 separates the operator's controls from their actix routes).
//!
//! - Pausing stops fetching on every partition the instance holds (and on those the group
//!   gives it later); the consumer stays in its group, so nothing is rebalanced and the lag
//!   simply grows. Events already in hand finish. Resuming fetches from where it stopped.
//! - A replay reads the range with a reader of its own (outside the group: the group's
//!   position never moves) and applies each event through the same inbox transaction as the
//!   consumer: an event already applied is recognised and changes nothing; one missing from
//!   the inbox (say, after a database was restored from a backup) is applied once. It ends at
//!   the group's committed offset: what lies beyond, the consumer applies itself.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use platform::admin::Admin;
use platform::config::KafkaSettings;
use platform::db::PgPool;
use platform::http::error_response;
use platform::kafka::GroupConsumer;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message as _, Offset, TopicPartitionList};
use schema::RawEnvelope;
use serde::{Deserialize, Serialize};

use crate::dead_letter::{self, DeadLetter};
use crate::inbox::{Coordinates, Failure, Handler, Outcome, apply_once};

/// How long a broker request of the replay may take.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);
/// A replay that receives nothing for this long while events remain gives up.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts at one event while the database is busy.
const BUSY_ATTEMPTS: usize = 20;

/// The controls, whatever the consumer's handler (the admin routes hold this).
#[async_trait]
pub trait ConsumerControl: Send + Sync + 'static {
    fn state(&self) -> ConsumerState;
    fn set_paused(&self, paused: bool) -> Result<ConsumerState, ControlError>;
    async fn replay(&self, request: ReplayRequest) -> Result<ReplayReport, ControlError>;
    /// This consumer group's dead letters from `topic`.
    async fn dead_letters(&self, topic: &str) -> Result<Vec<DeadLetter>, ControlError>;
    /// Publishes the chosen dead letters back to their topic (decision 0007).
    async fn redrive(&self, request: RedriveRequest) -> Result<Vec<Redriven>, ControlError>;
}

/// `POST /admin/consumer/dead-letters/redrive`: every dead letter of this group from `topic`,
/// or those at the listed `partition/offset` positions of the dead-letter topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedriveRequest {
    pub topic: String,
    #[serde(default)]
    pub all: bool,
    #[serde(default)]
    pub at: Vec<String>,
}

/// One redriven dead letter: where it was, and where it is now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Redriven {
    pub from: String,
    pub event_id: Option<String>,
    pub to: String,
}

#[derive(Debug, Deserialize)]
struct TopicQuery {
    topic: String,
}

/// `GET /admin/consumer`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsumerState {
    pub group: String,
    pub topics: Vec<String>,
    pub paused: bool,
    /// `topic/partition` of each partition this instance holds.
    pub partitions: Vec<String>,
}

/// `POST /admin/consumer/replay`: one topic, from an offset (on every partition, or those
/// listed) or from a time, up to the group's committed offset or, with `until_time`, to the
/// first event stamped at or after that time, whichever comes first. After a database is
/// restored to a moment T, a replay until T brings back what the restored inbox missed and
/// nothing of the future that the restore rolled back (decision 0016).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    pub topic: String,
    #[serde(default)]
    pub from_offset: Option<i64>,
    #[serde(default)]
    pub from_time: Option<DateTime<Utc>>,
    #[serde(default)]
    pub until_time: Option<DateTime<Utc>>,
    #[serde(default)]
    pub partitions: Option<Vec<i32>>,
}

/// One partition's replayed offsets, `from` included, `to` excluded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Range {
    pub partition: i32,
    pub from: i64,
    pub to: i64,
}

/// What a replay did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReplayReport {
    pub topic: String,
    pub ranges: Vec<Range>,
    /// Events read.
    pub read: u64,
    /// Applied now: they were not in the inbox.
    pub applied: u64,
    /// Already applied: the inbox recognised them and nothing changed.
    pub duplicates: u64,
    /// Not envelopes a consumer may act on (they went to the dead-letter topic when first read).
    pub unreadable: u64,
    /// Refused or failing now; see the service's log. Left as they were.
    pub failed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    Invalid(String),
    #[error("a replay is running on this instance; wait for its report")]
    Busy,
    #[error("the broker: {0}")]
    Broker(#[from] KafkaError),
    #[error("{0}")]
    Stalled(String),
    #[error("{0}")]
    NotFound(String),
}

impl ControlError {
    fn response(&self) -> HttpResponse {
        let (status, code) = match self {
            Self::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            Self::Busy => (StatusCode::CONFLICT, "replay_running"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Broker(error) if is_refused_by_acl(error) => {
                // Not an outage: this service's principal may not do it (decision 0028), e.g.
                // a redrive onto the topic it consumes, which only the relay and `dlq` write.
                let message = format!(
                    "{self}; this service's Kafka principal is not allowed to do that (a redrive goes through the dlq tool)"
                );
                return error_response(StatusCode::FORBIDDEN, "not_allowed_by_broker", message);
            }
            Self::Broker(_) | Self::Stalled(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        };
        error_response(status, code, self.to_string())
    }
}

/// Whether the broker refused because of an ACL, not because it is unwell.
fn is_refused_by_acl(error: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(
        error.rdkafka_error_code(),
        Some(Code::TopicAuthorizationFailed | Code::GroupAuthorizationFailed | Code::ClusterAuthorizationFailed)
    )
}

/// The controls of one [`crate::inbox::InboxConsumer`] (made by its `control()`).
pub struct Control<H> {
    pub(crate) consumer: Arc<crate::inbox::CurrentConsumer>,
    pub(crate) handler: Arc<H>,
    pub(crate) pool: PgPool,
    pub(crate) kafka: KafkaSettings,
    pub(crate) group: String,
    pub(crate) topics: Vec<String>,
    /// The consumer's runtime: a replay uses the consumer's database pool, whose connections
    /// must be opened where the consumer runs, not on an HTTP worker's runtime.
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) replaying: Arc<tokio::sync::Mutex<()>>,
}

#[async_trait]
impl<H: Handler> ConsumerControl for Control<H> {
    fn state(&self) -> ConsumerState {
        let consumer = self.consumer.get();
        let context = consumer.context();
        ConsumerState {
            group: self.group.clone(),
            topics: self.topics.clone(),
            paused: context.paused(),
            partitions: context.assigned().iter().map(|(t, p)| format!("{t}/{p}")).collect(),
        }
    }

    fn set_paused(&self, paused: bool) -> Result<ConsumerState, ControlError> {
        let consumer = self.consumer.get();
        consumer.context().set_paused(&*consumer, paused)?;
        tracing::warn!(group = self.group, paused, "consumer paused or resumed by an operator");
        Ok(self.state())
    }

    async fn dead_letters(&self, topic: &str) -> Result<Vec<DeadLetter>, ControlError> {
        self.consumed(topic)?;
        let (kafka, dlq_topic, group) = (self.kafka.clone(), dead_letter::topic_for(topic), self.group.clone());
        let letters = tokio::task::spawn_blocking(move || dead_letter::read_all(&kafka, &dlq_topic, BROKER_TIMEOUT))
            .await
            .map_err(|e| ControlError::Stalled(format!("reading dead letters stopped: {e}")))??;
        Ok(letters.into_iter().filter(|letter| letter.group == group).collect())
    }

    async fn redrive(&self, request: RedriveRequest) -> Result<Vec<Redriven>, ControlError> {
        if request.all != request.at.is_empty() {
            return Err(ControlError::Invalid(
                "give either \"all\": true or \"at\": [\"PARTITION/OFFSET\", ...]".into(),
            ));
        }
        let letters = self.dead_letters(&request.topic).await?;
        let chosen: Vec<&DeadLetter> = if request.all {
            letters.iter().collect()
        } else {
            let mut chosen = Vec::new();
            for position in &request.at {
                let letter = letters
                    .iter()
                    .find(|l| format!("{}/{}", l.dlq_partition, l.dlq_offset) == *position)
                    .ok_or_else(|| ControlError::NotFound(format!("no dead letter of this group at {position}")))?;
                chosen.push(letter);
            }
            chosen
        };
        let producer = platform::kafka::producer(&self.kafka)?;
        let mut redriven = Vec::new();
        for letter in chosen {
            let (partition, offset) = dead_letter::redrive(&producer, letter, None, BROKER_TIMEOUT).await?;
            tracing::warn!(from = letter.position(), event_id = ?letter.event_id, "dead letter redriven by an operator");
            redriven.push(Redriven {
                from: letter.position(),
                event_id: letter.event_id.clone(),
                to: format!("{}/{partition}/{offset}", letter.original_topic),
            });
        }
        Ok(redriven)
    }

    async fn replay(&self, request: ReplayRequest) -> Result<ReplayReport, ControlError> {
        self.consumed(&request.topic)?;
        if request.from_offset.is_some() == request.from_time.is_some() {
            return Err(ControlError::Invalid("give exactly one of from_offset and from_time".into()));
        }
        if request.from_offset.is_some_and(|o| o < 0) {
            return Err(ControlError::Invalid("from_offset must be 0 or more".into()));
        }
        if let (Some(from), Some(until)) = (request.from_time, request.until_time)
            && until <= from
        {
            return Err(ControlError::Invalid("until_time must be after from_time".into()));
        }
        let Ok(_one_at_a_time) = Arc::clone(&self.replaying).try_lock_owned() else {
            return Err(ControlError::Busy);
        };
        let replay = Replay {
            consumer: self.consumer.get(),
            handler: Arc::clone(&self.handler),
            pool: self.pool.clone(),
            reader: platform::kafka::reader(&self.kafka, &format!("{}.replay", self.group))?,
            group: self.group.clone(),
        };
        tracing::warn!(group = self.group, ?request, "replay started by an operator");
        let report = self
            .runtime
            .spawn(replay.run(request))
            .await
            .map_err(|e| ControlError::Stalled(format!("the replay stopped: {e}")))??;
        tracing::warn!(group = self.group, ?report, "replay finished");
        Ok(report)
    }
}

impl<H> Control<H> {
    fn consumed(&self, topic: &str) -> Result<(), ControlError> {
        if self.topics.iter().any(|t| t == topic) {
            return Ok(());
        }
        Err(ControlError::Invalid(format!(
            "topic {topic:?} is not consumed here (this consumer reads {})",
            self.topics.join(", ")
        )))
    }
}

struct Replay<H> {
    consumer: Arc<GroupConsumer>,
    handler: Arc<H>,
    pool: PgPool,
    reader: StreamConsumer,
    group: String,
}

impl<H: Handler> Replay<H> {
    async fn run(self, request: ReplayRequest) -> Result<ReplayReport, ControlError> {
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

/// The routes, for a service's admin scope: `GET /consumer`, `POST /consumer/pause`,
/// `POST /consumer/resume`, `POST /consumer/replay`, `GET /consumer/dead-letters?topic=`,
/// `POST /consumer/dead-letters/redrive`.
pub fn configure(config: &mut web::ServiceConfig, control: Arc<dyn ConsumerControl>) {
    config
        .app_data(web::Data::from(control))
        .route("/consumer", web::get().to(state))
        .route("/consumer/pause", web::post().to(pause))
        .route("/consumer/resume", web::post().to(resume))
        .route("/consumer/replay", web::post().to(replay))
        .route("/consumer/dead-letters", web::get().to(dead_letters))
        .route("/consumer/dead-letters/redrive", web::post().to(redrive));
}

async fn state(_: Admin, control: web::Data<dyn ConsumerControl>) -> HttpResponse {
    HttpResponse::Ok().json(control.state())
}

async fn pause(_: Admin, control: web::Data<dyn ConsumerControl>) -> HttpResponse {
    control.set_paused(true).map_or_else(|e| e.response(), |state| HttpResponse::Ok().json(state))
}

async fn resume(_: Admin, control: web::Data<dyn ConsumerControl>) -> HttpResponse {
    control.set_paused(false).map_or_else(|e| e.response(), |state| HttpResponse::Ok().json(state))
}

async fn replay(_: Admin, control: web::Data<dyn ConsumerControl>, request: web::Json<ReplayRequest>) -> HttpResponse {
    match control.replay(request.into_inner()).await {
        Ok(report) => HttpResponse::Ok().json(report),
        Err(error) => error.response(),
    }
}

async fn dead_letters(
    _: Admin,
    control: web::Data<dyn ConsumerControl>,
    query: web::Query<TopicQuery>,
) -> HttpResponse {
    match control.dead_letters(&query.topic).await {
        Ok(letters) => HttpResponse::Ok().json(letters),
        Err(error) => error.response(),
    }
}

async fn redrive(
    _: Admin,
    control: web::Data<dyn ConsumerControl>,
    request: web::Json<RedriveRequest>,
) -> HttpResponse {
    match control.redrive(request.into_inner()).await {
        Ok(redriven) => HttpResponse::Ok().json(redriven),
        Err(error) => error.response(),
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};

    use super::ControlError;

    #[test]
    fn a_refusal_by_the_brokers_acls_is_403_and_an_outage_503() {
        let refused = ControlError::Broker(KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed));
        assert_eq!(refused.response().status(), 403);
        let down = ControlError::Broker(KafkaError::MessageProduction(RDKafkaErrorCode::AllBrokersDown));
        assert_eq!(down.response().status(), 503);
    }
}
