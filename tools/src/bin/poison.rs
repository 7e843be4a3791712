//! Publishes one message of every kind of poison we know to the order and inventory topics,
//! as a broken or hostile producer would, and prints where each landed (one JSON object per
//! line) so a drill can check that the dead-letter topics hold exactly these, with reasons.
//!
//! ```text
//! poison --keys 01a2…,01a2…     # key the poisons by these order ids (cycled), else random
//! ```

use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use platform::config::KafkaSettings;
use rdkafka::producer::FutureRecord;
use schema::{EventId, OrderId};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(version, about = "Publish every kind of poison event, for the poison drill")]
struct Args {
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long, default_value = "orders.events")]
    orders_topic: String,
    #[arg(long, default_value = "inventory.events")]
    inventory_topic: String,
    /// Order ids to key the poisons by, comma-separated and cycled (real orders put the
    /// poison in the same chains as their real events); random ids when empty.
    #[arg(long, value_delimiter = ',')]
    keys: Vec<String>,
}

/// A well-formed envelope of `event_type` about `order`, to be broken.
fn envelope(event_type: &str, order: &str, payload: Value) -> Value {
    json!({
        "event_id": EventId::new(),
        "event_type": event_type,
        "schema_version": 1,
        "aggregate_id": order,
        "occurred_at": "2026-11-28T12:00:00Z",
        "correlation_id": format!("poison-{order}"),
        "payload": payload,
    })
}

fn placed(order: &str) -> Value {
    envelope(
        "OrderPlaced",
        order,
        json!({ "order_id": order, "customer_id": "poison", "lines": [{ "sku": "MUG-01", "quantity": 1 }] }),
    )
}

/// `value` with the field at `pointer` set (added, if its parent is an object without it).
fn with(mut value: Value, pointer: &str, replacement: Value) -> Value {
    let (parent, field) = pointer.rsplit_once('/').expect("a JSON pointer");
    match value.pointer_mut(parent).expect("the parent exists") {
        Value::Object(members) => {
            members.insert(field.to_owned(), replacement);
        }
        Value::Array(items) => items[field.parse::<usize>().expect("an index")] = replacement,
        other => panic!("cannot set {field} in {other}"),
    }
    value
}

fn bytes(value: &Value) -> Vec<u8> {
    value.to_string().into_bytes()
}

/// Every kind of poison: (name, on the inventory topic?, the message for order `key`).
fn poisons(key: &str) -> Vec<(&'static str, bool, Vec<u8>)> {
    let nested = (0..200).fold(json!(1), |inner, _| json!([inner]));
    let deep = (0..9).fold(json!(1), |inner, _| json!([inner]));
    let valid = placed(key).to_string();
    vec![
        ("not JSON", false, b"\xff\xfe not an event".to_vec()),
        ("cut short", false, valid.as_bytes()[..valid.len() / 2].to_vec()),
        ("lone surrogate", false, valid.replace("\"poison\"", "\"poi\\ud800son\"").into_bytes()),
        ("nested past the parser's limit", false, bytes(&with(placed(key), "/payload/extra", nested))),
        ("NUL in event_type", false, bytes(&with(placed(key), "/event_type", json!("Order\u{0}Placed")))),
        ("NUL in the payload", false, bytes(&with(placed(key), "/payload/customer_id", json!("poi\u{0}son")))),
        ("escape in correlation_id", false, bytes(&with(placed(key), "/correlation_id", json!("c\u{1b}[31m")))),
        ("200 KB string", false, bytes(&with(placed(key), "/payload/customer_id", json!("x".repeat(200_000))))),
        (
            "1,001 lines",
            false,
            bytes(&with(placed(key), "/payload/lines", json!(vec![json!({ "sku": "MUG-01", "quantity": 1 }); 1_001]))),
        ),
        ("nested 9 deep", false, bytes(&with(placed(key), "/payload/extra", deep))),
        ("huge number", false, bytes(&with(placed(key), "/payload/lines/0/quantity", json!(1e300)))),
        ("negative quantity", false, bytes(&with(placed(key), "/payload/lines/0/quantity", json!(-5)))),
        ("malformed sku", false, bytes(&with(placed(key), "/payload/lines/0/sku", json!("mug 01")))),
        ("wrong type", false, bytes(&with(placed(key), "/payload/lines", json!("three mugs")))),
        ("unknown type", false, bytes(&with(placed(key), "/event_type", json!("OrderShipped")))),
        ("unsupported version", false, bytes(&with(placed(key), "/schema_version", json!(99)))),
        ("cancel without an order id", false, bytes(&envelope("OrderCancelled", key, json!({ "order_id": "nope" })))),
        (
            "reservation with wrong lines",
            true,
            bytes(&envelope("InventoryReserved", key, json!({ "order_id": key, "lines": "x" }))),
        ),
        (
            "NUL in a rejection reason",
            true,
            bytes(&envelope(
                "InventoryRejected",
                key,
                json!({ "order_id": key, "reason": "out\u{0}of stock", "shortfalls": [] }),
            )),
        ),
        (
            "release of an unknown version",
            true,
            bytes(&with(
                envelope("InventoryReleased", key, json!({ "order_id": key, "lines": [] })),
                "/schema_version",
                json!(7),
            )),
        ),
    ]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings = KafkaSettings::for_tool(&args.brokers);
    let producer = platform::kafka::producer(&settings).context("creating a producer")?;
    let count = poisons("x").len();
    let keys: Vec<String> =
        if args.keys.is_empty() { (0..count).map(|_| OrderId::new().to_string()).collect() } else { args.keys.clone() };
    for (index, key) in keys.iter().cycle().take(count).enumerate() {
        let (kind, on_inventory, payload) = poisons(key).swap_remove(index);
        let topic = if on_inventory { &args.inventory_topic } else { &args.orders_topic };
        let record = FutureRecord::to(topic).key(key).payload(&payload);
        let delivery = producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(error, _)| error)
            .with_context(|| format!("publishing {kind}"))?;
        let (partition, offset) = (delivery.partition, delivery.offset);
        let line = json!({ "kind": kind, "topic": topic, "key": key, "partition": partition, "offset": offset });
        println!("{line}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_poison_is_built_and_none_is_a_valid_event() {
        let poisons = super::poisons(&schema::OrderId::new().to_string());
        assert_eq!(poisons.len(), 20);
        for (kind, _, payload) in poisons {
            let readable = schema::RawEnvelope::from_slice(&payload).ok();
            let decodes = readable.as_ref().is_some_and(|e| {
                schema::events::OrderEvent::decode(e).is_ok() || schema::events::InventoryEvent::decode(e).is_ok()
            });
            assert!(!decodes, "{kind} is a valid event");
        }
    }
}
