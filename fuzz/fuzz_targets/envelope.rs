//! Fuzzes the envelope reader every consumer runs first (`RawEnvelope::from_slice`, then the
//! typed decoders), on arbitrary bytes. It must never panic, and what it accepts must be
//! storable (no NUL or other control character but tab and line breaks, within the limits),
//! read the same after a round trip, and decode or be refused without panicking. A refused
//! envelope's identity, when it has one, must itself pass the checks.

#![no_main]

use libfuzzer_sys::fuzz_target;
use schema::RawEnvelope;
use schema::envelope::limits;
use schema::events::{InventoryEvent, OrderEvent};
use serde_json::Value;

fn storable(text: &str, max: usize) -> bool {
    text.len() <= max && !text.chars().any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
}

fn all_storable(value: &Value, depth: usize) -> bool {
    match value {
        Value::String(text) => storable(text, limits::STRING_LEN),
        Value::Array(items) => {
            depth < limits::DEPTH && items.len() <= limits::ITEMS && items.iter().all(|v| all_storable(v, depth + 1))
        }
        Value::Object(members) => {
            depth < limits::DEPTH
                && members.len() <= limits::ITEMS
                && members.iter().all(|(k, v)| storable(k, limits::EVENT_TYPE_LEN) && all_storable(v, depth + 1))
        }
        _ => true,
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = RawEnvelope::from_slice(data) {
        assert!(storable(&envelope.event_type, limits::EVENT_TYPE_LEN) && !envelope.event_type.is_empty());
        assert!(storable(&envelope.correlation_id, limits::TRACE_LEN));
        assert!(envelope.traceparent.as_deref().is_none_or(|t| storable(t, limits::TRACE_LEN)));
        assert!(all_storable(&envelope.payload, 0));
        let again = RawEnvelope::from_slice(&serde_json::to_vec(&envelope).expect("serialises"))
            .expect("an accepted envelope is accepted again");
        assert_eq!(again, envelope);
        let _ = OrderEvent::decode(&envelope);
        let _ = InventoryEvent::decode(&envelope);
    } else if let Ok(envelope) = RawEnvelope::parse(data)
        && let Some(identity) = envelope.identity()
    {
        assert!(identity.validate().is_ok(), "an identity passes the checks");
        assert_eq!((identity.event_id, identity.aggregate_id), (envelope.event_id, envelope.aggregate_id));
    }
});
