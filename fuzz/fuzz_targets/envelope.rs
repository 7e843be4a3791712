//! Fuzzes the envelope reader every consumer runs first (`RawEnvelope::from_slice`, then the
//! typed decoders), on arbitrary bytes. It must never panic, and what it accepts must be
//! storable (no NUL or other control character but tab and line breaks, within the limits),
//! read the same after a round trip, and decode or be refused without panicking. A refused
//! envelope's identity, when it has one, must itself pass the checks.

#![no_main]

#[path = "../../schema/tests/support/storable.rs"]
mod storable;

use libfuzzer_sys::fuzz_target;
use schema::RawEnvelope;
use schema::events::{InventoryEvent, OrderEvent};

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = RawEnvelope::from_slice(data) {
        storable::assert_storable(&envelope);
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
