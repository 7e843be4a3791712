use std::time::Duration;

use e2e::{Options, TestSystem, kafka};
use messaging::dead_letter::{self, DeadLetter};
use rdkafka::producer::FutureRecord;

/// Reads the dead-letter topic until it holds `count` letters.
async fn dead_letters(system: &TestSystem, topic: &str, count: usize) -> Vec<DeadLetter> {
    let dlq = schema::topics::dead_letter(topic);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let settings = system.kafka.clone();
        let reading = dlq.clone();
        let letters =
            tokio::task::spawn_blocking(move || dead_letter::read_all(&settings, &reading, Duration::from_secs(10)))
                .await
                .expect("reader")
                .expect("dead-letter topic readable");
        if letters.len() >= count || tokio::time::Instant::now() > deadline {
            return letters;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn garbage_on_the_orders_topic_is_dead_lettered_and_the_orders_behind_it_go_through() {
    let system = TestSystem::start().await;
    // One unreadable message at the head of every partition, so that every order placed
    // below is queued behind one.
    let producer = platform::kafka::producer(&system.kafka).expect("producer");
    for partition in 0..kafka::PARTITIONS {
        let record = FutureRecord::to(&system.topics.orders)
            .partition(partition)
            .key("not-an-order")
            .payload("{this is not an event");
        producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("garbage published");
    }
    let before = system.stock("KEYBOARD-01").await;
    let ids = [
        system.place("KEYBOARD-01", 1).await,
        system.place("KEYBOARD-01", 2).await,
        system.place("KEYBOARD-01", 3).await,
    ];
    for id in &ids {
        assert_eq!(system.settled(id).await["status"], "CONFIRMED", "order {id} was processed");
    }
    assert_eq!(system.stock("KEYBOARD-01").await, before - 6);

    let letters = dead_letters(&system, &system.topics.orders, 3).await;
    assert_eq!(letters.len(), 3, "one dead letter per garbage message: {letters:#?}");
    for letter in &letters {
        assert!(letter.error.starts_with("unreadable event"), "error says why: {}", letter.error);
        assert_eq!(letter.original_topic, system.topics.orders);
        assert_eq!(letter.original_offset, Some(0), "the coordinates of the original");
        assert_eq!(letter.group, format!("{}-inventory", system.name));
        assert_eq!(letter.payload.as_deref(), Some(&b"{this is not an event"[..]), "the original bytes");
    }
    e2e::eventually("dead letters counted", || system.inventory_consumer.dead_lettered() == 3).await;
    assert_eq!(system.inventory_consumer.processed(), 3);
    system.assert_books_balance().await;
    system.stop().await;
}

#[tokio::test]
async fn a_fixed_event_redriven_from_the_dead_letter_topic_is_applied_exactly_once() {
    // No order relay: the test publishes the order's event itself, broken.
    let system = TestSystem::start_with(Options { order_relays: 0, ..Options::default() }).await;
    let before = system.stock("MUG-01").await;
    let id = system.place("MUG-01", 3).await;

    let mut conn = TestSystem::connect(&system.order_db).await;
    let batch = relay::publish::fetch_batch(&mut conn, 10).await.expect("outbox");
    assert_eq!(batch.len(), 1);
    let row = &batch[0];
    let fixed = row.envelope.to_string();
    let mut broken = row.envelope.clone();
    broken["payload"]["lines"] = serde_json::json!("three mugs, please");
    let producer = platform::kafka::producer(&system.kafka).expect("producer");
    let broken = broken.to_string();
    let record = FutureRecord::to(&row.topic).key(&row.message_key).payload(&broken);
    producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("published");
    relay::publish::delete(&mut conn, &[row.id]).await.expect("outbox row gone");

    // The handler rejects it on every attempt, then it is dead-lettered.
    let letters = dead_letters(&system, &system.topics.orders, 1).await;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.event_id.as_deref(), Some(row.event_id.to_string().as_str()));
    assert_eq!(letter.attempts, Some(messaging::settings::InboxSettings::default().dead_letter_attempts as u32));
    assert!(letter.error.contains("lines"), "error names the bad field: {}", letter.error);
    assert_eq!(system.order(&id).await["status"], "PENDING");
    assert_eq!(system.stock("MUG-01").await, before, "nothing reserved for the broken event");

    // The operator fixes it and redrives it with the CLI, twice by mistake.
    let fixed_file = std::env::temp_dir().join(format!("{}-fixed.json", system.name));
    std::fs::write(&fixed_file, &fixed).expect("write fixed payload");
    let at = format!("{}/{}", letter.dlq_partition, letter.dlq_offset);
    for _ in 0..2 {
        let output = std::process::Command::new(e2e::processes::binary("dlq"))
            .args(["--brokers", &system.kafka.brokers, "redrive", &system.topics.orders, "--at", &at])
            .arg("--payload-file")
            .arg(&fixed_file)
            .output()
            .expect("dlq runs");
        assert!(output.status.success(), "dlq redrive: {}", String::from_utf8_lossy(&output.stderr));
    }
    let listed = std::process::Command::new(e2e::processes::binary("dlq"))
        .args(["--brokers", &system.kafka.brokers, "list", &system.topics.orders])
        .output()
        .expect("dlq runs");
    let listing = String::from_utf8_lossy(&listed.stdout);
    assert!(listing.contains(&row.event_id.to_string()) && listing.contains("lines"), "list shows it: {listing}");

    assert_eq!(system.settled(&id).await["status"], "CONFIRMED");
    e2e::eventually("the second redrive recognised", || system.inventory_consumer.duplicates() >= 1).await;
    assert_eq!(system.inventory_consumer.processed(), 1, "applied once");
    assert_eq!(system.inventory_consumer.dead_lettered(), 1);
    assert_eq!(system.stock("MUG-01").await, before - 3, "stock deducted once");
    let _ = std::fs::remove_file(&fixed_file);
    system.assert_books_balance().await;
    system.stop().await;
}
