//! The relay's part of an order's trace (decision 0029): how long each event waited in the
//! outbox (from its row's commit until the relay sent it), its publication (sent until the
//! broker acknowledged it, the parent of the consumer's Kafka hop), and each batch, a trace of
//! its own linked to every event it carried.

use std::time::{Duration, SystemTime};

use platform::trace::{Hop, KeyValue, SpanKind};

use crate::publish::Outgoing;

/// Writes each row's outbox wait and starts its publication; each row then carries its
/// publication's `traceparent` to the broker. Empty when spans are not exported.
pub fn sending(rows: &mut [Outgoing]) -> Vec<Hop> {
    if !platform::trace::exporting() {
        return Vec::new();
    }
    let now = SystemTime::now();
    rows.iter_mut()
        .map(|row| {
            let parent = row.traceparent.as_deref();
            Hop::record("outbox.wait", SpanKind::Internal, parent, (row.created_at.into(), now), attributes(row));
            let publish = Hop::start("relay.publish", SpanKind::Producer, parent, now, attributes(row));
            if let Some(traceparent) = publish.traceparent() {
                row.traceparent = Some(traceparent);
            }
            publish
        })
        .collect()
}

/// Ends the publications of a settled batch (failed ones marked) and writes the batch's span.
pub fn settled(hops: Vec<Hop>, acknowledged: &[bool], delivered_in: Duration) {
    if hops.is_empty() {
        return;
    }
    let now = SystemTime::now();
    let links = hops.iter().filter_map(Hop::context).collect();
    let events = hops.len() as i64;
    for (hop, ok) in hops.into_iter().zip(acknowledged) {
        hop.end(now, (!ok).then_some("not acknowledged by the broker; sent again"));
    }
    platform::trace::batch(
        "relay.batch",
        (now.checked_sub(delivered_in).unwrap_or(now), now),
        links,
        vec![KeyValue::new("messaging.batch.message_count", events)],
    );
}

fn attributes(row: &Outgoing) -> Vec<KeyValue> {
    vec![
        KeyValue::new("messaging.system", "kafka"),
        KeyValue::new("messaging.destination.name", row.topic.clone()),
        KeyValue::new("messaging.message.id", row.event_id.to_string()),
        KeyValue::new("event_type", row.event_type.clone()),
        KeyValue::new("order_id", row.message_key.clone()),
        KeyValue::new("outbox.id", row.id),
    ]
}
