//! The envelope every event travels in (see DESIGN.md, "Event envelope").

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::ids::{EventId, OrderId};

/// A payload that can travel as an event: it knows its type name, its schema version and
/// which order it is about.
pub trait Event: Serialize + DeserializeOwned + JsonSchema {
    /// The `event_type` field and Kafka header, e.g. `OrderPlaced`.
    const TYPE: &'static str;
    /// Bumped on any change a consumer must know about; consumers refuse versions they do not know.
    const VERSION: u32;

    fn order_id(&self) -> OrderId;
}

/// An event with its metadata. The Kafka key is `aggregate_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Envelope<P> {
    pub event_id: EventId,
    pub event_type: String,
    pub schema_version: u32,
    pub aggregate_id: OrderId,
    pub occurred_at: DateTime<Utc>,
    /// Follows one order through every hop: HTTP request, events, logs.
    pub correlation_id: String,
    /// W3C trace context of the operation that produced the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    pub payload: P,
}

/// An envelope whose payload has not been interpreted yet: what a consumer first sees.
pub type RawEnvelope = Envelope<serde_json::Value>;

/// Where an event comes from: the ids that let it be followed across hops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    pub correlation_id: String,
    pub traceparent: Option<String>,
}

impl<P: Event> Envelope<P> {
    /// Wraps a payload in a fresh envelope (new event id, now).
    pub fn new(payload: P, trace: &Trace) -> Self {
        Self {
            event_id: EventId::new(),
            event_type: P::TYPE.to_owned(),
            schema_version: P::VERSION,
            aggregate_id: payload.order_id(),
            occurred_at: Utc::now(),
            correlation_id: trace.correlation_id.clone(),
            traceparent: trace.traceparent.clone(),
            payload,
        }
    }
}

/// Why a raw envelope could not be read as a given event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The topic carries no event of this type (`expected` lists those it does carry).
    #[error("unknown event type {found:?} (this topic carries {expected})")]
    UnknownType { expected: &'static str, found: String },
    #[error("event type {found:?} is not {expected:?}")]
    WrongType { expected: &'static str, found: String },
    #[error("{event_type} schema version {found} is not supported (this build reads version {supported})")]
    UnsupportedVersion { event_type: &'static str, found: u32, supported: u32 },
    /// `at` is the path of the offending field (`lines[0].quantity`), `.` for the whole payload.
    #[error("{event_type} payload does not match its schema at {at}: {source}")]
    Payload { event_type: &'static str, at: String, source: serde_json::Error },
}

/// Why the bytes of a message are not an envelope a consumer may act on.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("not an event envelope: {0}")]
    Json(#[from] serde_json::Error),
    /// Well-formed JSON carrying a value the database would refuse or no producer of ours
    /// writes; `at` is the path of the field (`payload.lines[3].sku`).
    #[error("refused value at {at}: {why}")]
    Refused { at: String, why: &'static str },
}

/// The limits [`RawEnvelope::from_slice`] checks, so that an event that passes can reach a
/// query without being refused by the database (decision 0011).
pub mod limits {
    /// `event_type`: 1 to this many ASCII letters, digits, `.`, `_` or `-`.
    pub const EVENT_TYPE_LEN: usize = 64;
    /// `correlation_id` and `traceparent`.
    pub const TRACE_LEN: usize = 256;
    /// Any string inside the payload, in bytes (a rejection reason is the longest we write).
    pub const STRING_LEN: usize = 8 * 1024;
    /// Elements of any array or members of any object inside the payload.
    pub const ITEMS: usize = 1_000;
    /// Nesting of arrays and objects inside the payload.
    pub const DEPTH: usize = 8;
}

impl RawEnvelope {
    /// Parses the bytes of a Kafka message value and checks every value the database would
    /// refuse (NUL and other control characters) or no producer of ours writes (overlong
    /// strings, huge arrays, deep nesting). What passes can be stored in the inbox and
    /// decoded; what does not is refused before any query runs.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ReadError> {
        let envelope = Self::parse(bytes)?;
        envelope.validate()?;
        Ok(envelope)
    }

    /// Parses without the checks of [`validate`](Self::validate): for a consumer that wants
    /// to know which event and order a refused message was about.
    pub fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The checks of [`from_slice`](Self::from_slice).
    pub fn validate(&self) -> Result<(), ReadError> {
        let refused = |at: &str, why| Err(ReadError::Refused { at: at.to_owned(), why });
        let event_type = &self.event_type;
        if event_type.is_empty() || event_type.len() > limits::EVENT_TYPE_LEN {
            return refused("event_type", "must be 1 to 64 characters");
        }
        if !event_type.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
            return refused("event_type", "may hold only ASCII letters, digits, '.', '_' and '-'");
        }
        check_text("correlation_id", &self.correlation_id, limits::TRACE_LEN)?;
        if let Some(traceparent) = &self.traceparent {
            check_text("traceparent", traceparent, limits::TRACE_LEN)?;
        }
        check_value(&mut String::from("payload"), &self.payload, 0)
    }

    /// What identifies a refused envelope, safe to store: its ids and type with the payload
    /// dropped, an unstorable correlation id replaced by the event id and an unstorable
    /// traceparent removed. `None` when its type itself is unstorable.
    pub fn identity(&self) -> Option<Self> {
        let mut type_only = self.clone();
        type_only.payload = serde_json::Value::Null;
        type_only.correlation_id = String::new();
        type_only.traceparent = None;
        type_only.validate().ok()?;
        let storable = |at: &str, text: &str| check_text(at, text, limits::TRACE_LEN).is_ok();
        Some(Self {
            correlation_id: if storable("c", &self.correlation_id) {
                self.correlation_id.clone()
            } else {
                self.event_id.to_string()
            },
            traceparent: self.traceparent.clone().filter(|t| storable("t", t)),
            ..type_only
        })
    }

    pub fn trace(&self) -> Trace {
        Trace { correlation_id: self.correlation_id.clone(), traceparent: self.traceparent.clone() }
    }

    /// Whether this is a `P` at a schema version newer than this build reads.
    pub fn newer_than<P: Event>(&self) -> bool {
        self.event_type == P::TYPE && self.schema_version > P::VERSION
    }

    /// Reads the payload as `P`, checking type and version first.
    pub fn decode<P: Event>(&self) -> Result<P, DecodeError> {
        if self.event_type != P::TYPE {
            return Err(DecodeError::WrongType { expected: P::TYPE, found: self.event_type.clone() });
        }
        if self.schema_version != P::VERSION {
            return Err(DecodeError::UnsupportedVersion {
                event_type: P::TYPE,
                found: self.schema_version,
                supported: P::VERSION,
            });
        }
        serde_path_to_error::deserialize(&self.payload).map_err(|error| DecodeError::Payload {
            event_type: P::TYPE,
            at: error.path().to_string(),
            source: error.into_inner(),
        })
    }
}

/// A string is refused if it holds NUL (which Postgres cannot store) or another control
/// character other than tab and line breaks, or is longer than `max` bytes.
fn check_text(at: &str, text: &str, max: usize) -> Result<(), ReadError> {
    let why = if text.len() > max {
        "is too long"
    } else if text.contains('\0') {
        "holds a NUL character"
    } else if text.chars().any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')) {
        "holds a control character"
    } else {
        return Ok(());
    };
    Err(ReadError::Refused { at: at.to_owned(), why })
}

/// Walks the payload depth-first; `at` is the path so far, restored on the way out.
fn check_value(at: &mut String, value: &serde_json::Value, depth: usize) -> Result<(), ReadError> {
    use serde_json::Value;
    let refused = |at: &str, why| Err(ReadError::Refused { at: at.to_owned(), why });
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
        Value::String(text) => check_text(at, text, limits::STRING_LEN),
        Value::Array(_) | Value::Object(_) if depth >= limits::DEPTH => refused(at, "is nested too deeply"),
        Value::Array(items) if items.len() > limits::ITEMS => refused(at, "has too many elements"),
        Value::Object(members) if members.len() > limits::ITEMS => refused(at, "has too many members"),
        Value::Array(items) => {
            let len = at.len();
            for (index, item) in items.iter().enumerate() {
                at.push_str(&format!("[{index}]"));
                check_value(at, item, depth + 1)?;
                at.truncate(len);
            }
            Ok(())
        }
        Value::Object(members) => {
            let len = at.len();
            for (key, member) in members {
                // The key is checked before it joins the path, so the path stays printable.
                check_text(&format!("{at} (a key)"), key, limits::EVENT_TYPE_LEN)?;
                at.push('.');
                at.push_str(key);
                check_value(at, member, depth + 1)?;
                at.truncate(len);
            }
            Ok(())
        }
    }
}

impl<P: Event> Envelope<P> {
    /// The same envelope with its payload as JSON, ready for the outbox.
    pub fn into_raw(self) -> Result<RawEnvelope, serde_json::Error> {
        Ok(Envelope {
            event_id: self.event_id,
            event_type: self.event_type,
            schema_version: self.schema_version,
            aggregate_id: self.aggregate_id,
            occurred_at: self.occurred_at,
            correlation_id: self.correlation_id,
            traceparent: self.traceparent,
            payload: serde_json::to_value(self.payload)?,
        })
    }
}
