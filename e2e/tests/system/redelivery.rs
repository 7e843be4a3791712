use std::time::Duration;

use e2e::{Options, TestSystem, kafka};
use relay::pipeline::Pipeline;
use relay::window::Position;

#[tokio::test]
async fn an_order_placed_event_delivered_twice_deducts_stock_once_and_counts_a_duplicate() {
    let system = TestSystem::start().await;
    let before = system.stock("CABLE-01").await;
    let id = system.place("CABLE-01", 4).await;
    assert_eq!(system.settled(&id).await["status"], "CONFIRMED");

    let published = kafka::read_topic(&system.kafka, &system.topics.orders, 1, Duration::from_secs(20)).await;
    assert_eq!(published.len(), 1);
    kafka::republish(&system.kafka, &published[0]).await;
    e2e::eventually("a duplicate delivery", || system.inventory_consumer.duplicates() >= 1).await;

    assert_eq!(system.inventory_consumer.processed(), 1);
    assert_eq!(system.stock("CABLE-01").await, before - 4);
    system.assert_books_balance().await;
    system.stop().await;
}

#[tokio::test]
async fn a_relay_batch_published_twice_before_its_position_was_written_is_applied_once() {
    // No relay for the order outbox: the test plays a relay that crashed between Kafka's
    // acknowledgement and writing its lanes' positions, and then ran the same batch again.
    let system = TestSystem::start_with(Options { order_relays: 0, ..Options::default() }).await;
    let before = system.stock("MUG-01").await;
    let id = system.place("MUG-01", 5).await;

    let mut conn = TestSystem::connect(&system.order_db).await;
    let producer = platform::kafka::producer(&system.kafka).expect("producer");
    let from_the_start = || {
        let mut pipeline = Pipeline::new(1, 100);
        for lane in 0..8 {
            pipeline.add_lane(lane, Position::start());
        }
        pipeline
    };
    let mut crashed = from_the_start();
    assert_eq!(crashed.fill(&mut conn, &producer).await.expect("read"), 1);
    let first = crashed.take_oldest().await.expect("a batch in flight");
    assert_eq!(first.acknowledged, [true], "acknowledged; the relay crashes before writing its position");
    let mut again = from_the_start();
    assert_eq!(again.fill(&mut conn, &producer).await.expect("read"), 1, "the row is read again");
    let second = again.take_oldest().await.expect("in flight");
    assert_eq!(second.acknowledged, [true]);

    assert_eq!(system.settled(&id).await["status"], "CONFIRMED");
    e2e::eventually("a duplicate delivery", || system.inventory_consumer.duplicates() >= 1).await;
    let on_topic = kafka::read_topic(&system.kafka, &system.topics.orders, 2, Duration::from_secs(20)).await;
    assert_eq!(on_topic.len(), 2, "the event was published twice");
    assert_eq!(system.stock("MUG-01").await, before - 5, "and applied once");
    system.assert_books_balance().await;
    system.stop().await;
}
