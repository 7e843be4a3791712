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

impl RawEnvelope {
    /// Parses the bytes of a Kafka message value.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    pub fn trace(&self) -> Trace {
        Trace { correlation_id: self.correlation_id.clone(), traceparent: self.traceparent.clone() }
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
