//! What a Postgres text or jsonb column accepts, checked independently of the reader: no
//! NUL, no control character but tab and line breaks, within the reader's limits. Shared by
//! the reader's property tests (`schema/tests/hostile_envelopes.rs`) and its fuzz target
//! (`fuzz/fuzz_targets/envelope.rs`).

use schema::RawEnvelope;
use schema::envelope::limits;
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

/// Panics, naming the field, unless every value of `envelope` can be stored.
pub fn assert_storable(envelope: &RawEnvelope) {
    assert!(
        !envelope.event_type.is_empty() && storable(&envelope.event_type, limits::EVENT_TYPE_LEN),
        "event_type {:?}",
        envelope.event_type
    );
    assert!(storable(&envelope.correlation_id, limits::TRACE_LEN), "correlation_id {:?}", envelope.correlation_id);
    assert!(envelope.traceparent.as_deref().is_none_or(|t| storable(t, limits::TRACE_LEN)), "traceparent");
    assert!(all_storable(&envelope.payload, 0), "payload {}", envelope.payload);
}
