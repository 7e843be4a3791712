//! Services upgraded one at a time (decision 0017): a field added by a newer writer is read
//! past; an event this build does not understand yet (a newer schema version, a type the topic
//! does not carry yet) waits in the dead letters without ending its order, and the redrive
//! after the upgrade applies it once.

use e2e::{Options, OutboxEnvelope as _, TestSystem, kafka};
use serde_json::json;

#[tokio::test]
async fn an_event_from_a_newer_build_waits_in_the_dead_letters_and_the_redrive_after_the_upgrade_applies_it() {
    let system = TestSystem::start_with(Options { order_relays: 0, ..Options::default() }).await;
    let before = system.stock("MUG-01").await;
    let [later, newer, extended] =
        [system.place("MUG-01", 1).await, system.place("MUG-01", 2).await, system.place("MUG-01", 4).await];
    let rows = TestSystem::take_outbox(&system.order_db, 3).await;
    let [later_row, newer_row, extended_row] = &rows[..] else { unreachable!() };
    let publish = async |envelope: &serde_json::Value| {
        let key = envelope["aggregate_id"].as_str().expect("aggregate id");
        kafka::publish_raw(system.producer(), &system.topics.orders, key, envelope.to_string().as_bytes()).await;
    };

    // A newer order service: the placement at schema version 2, and a type inventory does
    // not know yet, about the same order.
    let mut from_v2 = newer_row.envelope();
    from_v2["schema_version"] = json!(2);
    from_v2["payload"]["gift_wrap"] = json!(true);
    publish(&from_v2).await;
    let mut unknown = newer_row.envelope();
    unknown["event_id"] = json!(schema::EventId::new());
    unknown["event_type"] = json!("OrderGiftWrapped");
    unknown["payload"] = json!({"order_id": newer, "paper": "red"});
    publish(&unknown).await;
    // The same version with a field added: read past it.
    let mut with_a_field = extended_row.envelope();
    with_a_field["payload"]["gift_wrap"] = json!(false);
    publish(&with_a_field).await;
    publish(&later_row.envelope()).await;

    for id in [&later, &extended] {
        assert_eq!(system.settled(id).await["status"], "CONFIRMED", "order {id} went through");
    }
    let letters = kafka::dead_letters(&system.kafka, &system.topics.orders, 2).await;
    assert_eq!(letters.len(), 2, "{letters:#?}");
    assert!(letters.iter().any(|l| l.error.contains("schema version 2")), "{letters:#?}");
    assert!(letters.iter().any(|l| l.error.contains("OrderGiftWrapped")), "{letters:#?}");
    let waiting = system.order(&newer).await;
    assert_eq!(waiting["status"], "PENDING", "nothing ended the order: {waiting}");
    assert_eq!(system.stock("MUG-01").await, before - 5, "nothing reserved for it yet");

    // The upgrade, modelled by what an upgraded inventory reads: the event at the version
    // this build reads, redriven under the same event id. It was not recorded as handled, so
    // it applies now, once.
    let letter = letters.iter().find(|l| l.error.contains("schema version 2")).expect("the v2 letter");
    kafka::redrive_with_payload(&system.kafka, &system.topics.orders, letter, &newer_row.envelope().to_string());
    assert_eq!(system.settled(&newer).await["status"], "CONFIRMED");
    assert_eq!(system.stock("MUG-01").await, before - 7);
    system.assert_books_balance().await;
    system.stop().await;
}
