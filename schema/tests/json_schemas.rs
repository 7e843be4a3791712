//! Every event type has a JSON Schema file in `schema/json/`, generated from the Rust types.
//! This test fails when a type changes and its file was not regenerated, so the files other
//! teams read can never drift from what the services actually send.
//!
//! Regenerate with `UPDATE_SCHEMAS=1 cargo test -p schema --test json_schemas`.

use std::path::PathBuf;

use schema::events::{
    InventoryRefused, InventoryRejected, InventoryReleased, InventoryReserved, InventoryShipped, OrderCancelled,
    OrderPlaced, OrderReadyToShip,
};
use schema::{Envelope, Event};

fn check<E: Event>() {
    let generated = schemars::schema_for!(Envelope<E>);
    let mut text = serde_json::to_string_pretty(&generated).expect("a schema serialises");
    text.push('\n');
    // The crate's directory as cargo or nextest names it when the test runs, not where the
    // binary was compiled: a shared target directory can hand one clone another's binary.
    let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    let path = PathBuf::from(crate_dir).join(format!("json/{}.schema.json", E::TYPE));
    if std::env::var_os("UPDATE_SCHEMAS").is_some() {
        std::fs::write(&path, &text).expect("schema file is writable");
        return;
    }
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} is missing ({e}); run with UPDATE_SCHEMAS=1", path.display()));
    assert_eq!(committed, text, "{} is out of date; run with UPDATE_SCHEMAS=1", path.display());
}

#[test]
fn every_event_type_has_an_up_to_date_json_schema_file() {
    check::<OrderPlaced>();
    check::<OrderCancelled>();
    check::<OrderReadyToShip>();
    check::<InventoryReserved>();
    check::<InventoryRejected>();
    check::<InventoryReleased>();
    check::<InventoryShipped>();
    check::<InventoryRefused>();
}

#[test]
fn an_event_survives_a_round_trip_through_its_envelope() {
    let placed = OrderPlaced {
        order_id: schema::OrderId::new(),
        customer_id: "c-1".into(),
        lines: vec![schema::events::Line {
            sku: schema::Sku::parse("MUG-01").expect("valid sku"),
            quantity: schema::Quantity::parse(2).expect("valid quantity"),
        }],
    };
    let trace = schema::envelope::Trace { correlation_id: "corr-1".into(), traceparent: None };
    let raw = Envelope::new(placed.clone(), &trace).into_raw().expect("serialises");
    let bytes = serde_json::to_vec(&raw).expect("serialises");
    let back = schema::RawEnvelope::from_slice(&bytes).expect("parses");
    assert_eq!(back.decode::<OrderPlaced>().expect("decodes"), placed);
    assert!(back.decode::<OrderCancelled>().is_err(), "the type is checked");
}
