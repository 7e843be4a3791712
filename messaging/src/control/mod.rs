//! What an operator can do to a service's inbox consumer, behind the admin token (decision
//! 0015): see its state, **pause** and **resume** it, **replay** a range of one of its topics
//! into it, and list and **redrive** its dead letters (what `tools`' `dlq` does, from the same
//! place as the rest).
//!
//! Here the controls; their routes are [`routes`] (added with [`configure`]), a replay's
//! reading and applying is [`replay`].
//!
//! - Pausing stops fetching on every partition the instance holds (and on those the group
//!   gives it later); the consumer stays in its group, so nothing is rebalanced and the lag
//!   simply grows. Events already in hand finish. Resuming fetches from where it stopped.
//! - A replay reads the range with a reader of its own (outside the group: the group's
//!   position never moves) and applies each event through the same inbox transaction as the
//!   consumer: an event already applied is recognised and changes nothing; one missing from
//!   the inbox (say, after a database was restored from a backup) is applied once. It ends at
//!   the group's committed offset: what lies beyond, the consumer applies itself.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use platform::config::KafkaSettings;
use platform::db::PgPool;
use rdkafka::consumer::Consumer as _;
use rdkafka::error::KafkaError;
use serde::{Deserialize, Serialize};

mod replay;
mod routes;

use replay::Replay;
pub use routes::configure;

use crate::dead_letter::{self, DeadLetter};
use crate::inbox::Handler;

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
