//! Dead-letter topics: where a consumer puts an event it can never apply, so that one bad
//! message does not stop the events behind it.
//!
//! A dead letter is the original message (same key, payload and headers) published to
//! `<topic>.dlq`, with `dlq.*` headers saying why it failed and where it came from. An
//! operator lists them with the `dlq` command, fixes what was wrong, and redrives them to
//! their original topic. Redriving is safe to repeat: the event keeps its event id, and the
//! consumer's inbox applies an event id once.

use std::collections::HashMap;
use std::time::Duration;

use platform::config::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Header, Headers as _, Message as _, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

pub use schema::topics::{DEAD_LETTER_SUFFIX as SUFFIX, dead_letter as topic_for};

/// Headers a dead letter carries besides the original message's own.
pub mod headers {
    /// Why the event could not be applied, in plain words.
    pub const ERROR: &str = "dlq.error";
    pub const TOPIC: &str = "dlq.original.topic";
    pub const PARTITION: &str = "dlq.original.partition";
    pub const OFFSET: &str = "dlq.original.offset";
    /// The consumer group that gave up on it.
    pub const GROUP: &str = "dlq.consumer.group";
    pub const ATTEMPTS: &str = "dlq.attempts";
    /// RFC 3339 time of the dead-lettering.
    pub const FAILED_AT: &str = "dlq.failed.at";
    /// Set on a redriven event: `<dlq topic>/<partition>/<offset>` it came from.
    pub const REDRIVEN_FROM: &str = "dlq.redriven.from";
}

/// Publishes dead letters for one consumer group.
#[derive(Clone)]
pub struct DeadLetterQueue {
    producer: FutureProducer,
    group: String,
    timeout: Duration,
}

impl DeadLetterQueue {
    pub fn new(settings: &KafkaSettings, group: &str) -> KafkaResult<Self> {
        Ok(Self {
            producer: platform::kafka::producer(settings)?,
            group: group.to_owned(),
            timeout: Duration::from_millis(u64::from(settings.message_timeout_ms)),
        })
    }

    /// Publishes `message` to its dead-letter topic; returns the dead letter's
    /// (partition, offset) once the broker acknowledged it.
    pub async fn publish(&self, message: &OwnedMessage, error: &str, attempts: usize) -> KafkaResult<(i32, i64)> {
        let mut headers = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            for header in original.iter().filter(|h| !h.key.starts_with("dlq.")) {
                headers = headers.insert(Header { key: header.key, value: header.value });
            }
        }
        let failed_at = chrono::Utc::now().to_rfc3339();
        for (key, value) in [
            (headers::ERROR, error.to_owned()),
            (headers::TOPIC, message.topic().to_owned()),
            (headers::PARTITION, message.partition().to_string()),
            (headers::OFFSET, message.offset().to_string()),
            (headers::GROUP, self.group.clone()),
            (headers::ATTEMPTS, attempts.to_string()),
            (headers::FAILED_AT, failed_at),
        ] {
            headers = headers.insert(Header { key, value: Some(value.as_bytes()) });
        }
        let topic = topic_for(message.topic());
        let mut record = FutureRecord::<[u8], [u8]>::to(&topic).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        let delivery = self.producer.send(record, self.timeout).await.map_err(|(error, _)| error)?;
        Ok((delivery.partition, delivery.offset))
    }
}

/// One message of a dead-letter topic, as an operator sees it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Where the dead letter itself is: its topic, partition and offset.
    pub dlq_topic: String,
    pub dlq_partition: i32,
    pub dlq_offset: i64,
    pub error: String,
    pub original_topic: String,
    pub original_partition: Option<i32>,
    pub original_offset: Option<i64>,
    pub group: String,
    pub attempts: Option<u32>,
    pub failed_at: String,
    /// From the payload, when it is a readable envelope.
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    #[serde(skip)]
    pub key: Option<Vec<u8>>,
    #[serde(skip)]
    pub payload: Option<Vec<u8>>,
    /// The original message's own headers (traceparent, event id...).
    #[serde(skip)]
    pub original_headers: Vec<(String, Vec<u8>)>,
}

impl DeadLetter {
    pub fn from_message(message: &OwnedMessage) -> Self {
        let mut dlq: HashMap<&str, String> = HashMap::new();
        let mut original_headers = Vec::new();
        if let Some(headers) = message.headers() {
            for header in headers.iter() {
                let value = header.value.unwrap_or_default();
                if header.key.starts_with("dlq.") {
                    dlq.insert(header.key, String::from_utf8_lossy(value).into_owned());
                } else {
                    original_headers.push((header.key.to_owned(), value.to_vec()));
                }
            }
        }
        let envelope = message.payload().and_then(|payload| schema::RawEnvelope::from_slice(payload).ok());
        let mut take = |key: &str| dlq.remove(key).unwrap_or_default();
        let original_topic = take(headers::TOPIC);
        Self {
            dlq_topic: message.topic().to_owned(),
            dlq_partition: message.partition(),
            dlq_offset: message.offset(),
            error: take(headers::ERROR),
            original_partition: take(headers::PARTITION).parse().ok(),
            original_offset: take(headers::OFFSET).parse().ok(),
            group: take(headers::GROUP),
            attempts: take(headers::ATTEMPTS).parse().ok(),
            failed_at: take(headers::FAILED_AT),
            original_topic: if original_topic.is_empty() {
                message.topic().strip_suffix(SUFFIX).unwrap_or_default().to_owned()
            } else {
                original_topic
            },
            event_id: envelope.as_ref().map(|e| e.event_id.to_string()),
            event_type: envelope.map(|e| e.event_type),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            original_headers,
        }
    }

    /// `<dlq topic>/<partition>/<offset>`: how an operator names this dead letter.
    pub fn position(&self) -> String {
        format!("{}/{}/{}", self.dlq_topic, self.dlq_partition, self.dlq_offset)
    }
}

/// Reads every message now on `dlq_topic`, from the beginning to the current end of each
/// partition. Commits nothing: listing is read-only.
pub fn read_all(settings: &KafkaSettings, dlq_topic: &str, timeout: Duration) -> KafkaResult<Vec<DeadLetter>> {
    let consumer: BaseConsumer = platform::kafka::client_config(settings)
        .set("group.id", format!("dlq-reader-{}", uuid::Uuid::new_v4().simple()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(dlq_topic), timeout)?;
    let Some(topic) = metadata.topics().iter().find(|t| t.name() == dlq_topic) else { return Ok(Vec::new()) };
    if let Some(error) = topic.error() {
        let code = rdkafka::types::RDKafkaErrorCode::from(error);
        return Err(KafkaError::MetadataFetch(code));
    }
    let mut assignment = TopicPartitionList::new();
    let mut remaining: HashMap<i32, i64> = HashMap::new();
    for partition in topic.partitions() {
        let (low, high) = consumer.fetch_watermarks(dlq_topic, partition.id(), timeout)?;
        if high > low {
            assignment.add_partition_offset(dlq_topic, partition.id(), Offset::Offset(low))?;
            remaining.insert(partition.id(), high);
        }
    }
    if remaining.is_empty() {
        return Ok(Vec::new());
    }
    consumer.assign(&assignment)?;
    let deadline = std::time::Instant::now() + timeout;
    let mut letters = Vec::new();
    while !remaining.is_empty() && std::time::Instant::now() < deadline {
        let Some(result) = consumer.poll(Duration::from_millis(200)) else { continue };
        let message = result?.detach();
        if remaining.get(&message.partition()).is_some_and(|high| message.offset() < *high) {
            letters.push(DeadLetter::from_message(&message));
        }
        if remaining.get(&message.partition()).is_some_and(|high| message.offset() + 1 >= *high) {
            remaining.remove(&message.partition());
        }
    }
    if !remaining.is_empty() {
        return Err(KafkaError::MessageConsumption(rdkafka::types::RDKafkaErrorCode::OperationTimedOut));
    }
    letters.sort_by_key(|letter| (letter.dlq_partition, letter.dlq_offset));
    Ok(letters)
}

/// Publishes `letter` back to its original topic with its key and original headers, and
/// `payload` instead of its own if given (a fixed event). Returns the new (partition, offset).
pub async fn redrive(
    producer: &FutureProducer,
    letter: &DeadLetter,
    payload: Option<&[u8]>,
    timeout: Duration,
) -> KafkaResult<(i32, i64)> {
    let mut headers = OwnedHeaders::new();
    for (key, value) in &letter.original_headers {
        headers = headers.insert(Header { key, value: Some(value) });
    }
    let from = letter.position();
    headers = headers.insert(Header { key: headers::REDRIVEN_FROM, value: Some(from.as_bytes()) });
    let mut record = FutureRecord::<[u8], [u8]>::to(&letter.original_topic).headers(headers);
    if let Some(key) = &letter.key {
        record = record.key(key);
    }
    if let Some(payload) = payload.or(letter.payload.as_deref()) {
        record = record.payload(payload);
    }
    let delivery = producer.send(record, timeout).await.map_err(|(error, _)| error)?;
    Ok((delivery.partition, delivery.offset))
}
