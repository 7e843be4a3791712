//! Strategies for hostile events, shared by the reader's property tests
//! (`schema/tests/hostile_envelopes.rs`) and the consumers' (`e2e/tests/system/poison.rs`).

#![allow(dead_code)] // each user takes what it needs

use proptest::prelude::*;
use schema::{EventId, OrderId};
use serde_json::{Value, json};

/// Strings of every kind: plain, anything a Rust string can hold, and plain text with a
/// control character planted in it.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => "[a-z0-9 -]{0,24}",
        1 => any::<String>(),
        2 => "[a-z]{0,6}[\\x00-\\x1f\\x7f\\u{80}-\\u{9f}][a-z]{0,6}",
    ]
}

/// Any JSON value, with strings that may hold anything a Rust string can.
pub fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("JSON has no NaN or infinity", |f| f.is_finite()).prop_map(Value::from),
        text().prop_map(Value::String),
        "[A-Z]{2,8}-[0-9]{2}".prop_map(Value::String),
    ];
    leaf.prop_recursive(12, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::hash_map(text(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A payload shaped like one of ours, with every field replaceable by anything.
pub fn payload() -> impl Strategy<Value = Value> {
    let line = || (any_json(), any_json()).prop_map(|(sku, quantity)| json!({ "sku": sku, "quantity": quantity }));
    prop_oneof![
        (any_json(), prop::collection::vec(line(), 0..4)).prop_map(
            |(customer, lines)| json!({ "order_id": OrderId::new(), "customer_id": customer, "lines": lines })
        ),
        (any_json(), prop::collection::vec(line(), 0..4))
            .prop_map(|(order_id, lines)| json!({ "order_id": order_id, "lines": lines })),
        (text(), any::<i64>(), any_json()).prop_map(|(reason, requested, available)| json!({
            "order_id": OrderId::new(), "reason": reason,
            "shortfalls": [{ "sku": "MUG-01", "requested": requested, "available": available }],
        })),
        any_json(),
    ]
}

/// An envelope whose every field may be hostile.
pub fn envelope() -> impl Strategy<Value = Value> {
    let event_type = prop_oneof![
        Just("OrderPlaced".to_owned()),
        Just("OrderCancelled".to_owned()),
        Just("InventoryReserved".to_owned()),
        Just("InventoryRejected".to_owned()),
        Just("InventoryReleased".to_owned()),
        text(),
    ];
    let version = prop_oneof![4 => Just(json!(1)), 1 => any::<u64>().prop_map(Value::from), 1 => any_json()];
    (event_type, version, text(), proptest::option::of(text()), payload()).prop_map(
        |(event_type, version, correlation_id, traceparent, payload)| {
            json!({
                "event_id": EventId::new(),
                "event_type": event_type,
                "schema_version": version,
                "aggregate_id": OrderId::new(),
                "occurred_at": "2026-11-28T12:00:00Z",
                "correlation_id": correlation_id,
                "traceparent": traceparent,
                "payload": payload,
            })
        },
    )
}
