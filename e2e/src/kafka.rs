//! Broker helpers for tests: create topics, read a topic from the beginning, publish raw
//! messages.

use std::time::Duration;

use platform::config::KafkaSettings;
use rdkafka::Message as _;
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::Consumer as _;
use rdkafka::message::OwnedMessage;
use rdkafka::producer::FutureRecord;

/// Partitions of a test topic: more than one, so per-key ordering is really exercised.
pub const PARTITIONS: i32 = 3;

pub async fn create_topics(settings: &KafkaSettings, names: &[&str]) {
    let admin = platform::kafka::admin(settings).expect("admin client");
    let topics: Vec<NewTopic> =
        names.iter().map(|name| NewTopic::new(name, PARTITIONS, TopicReplication::Fixed(1))).collect();
    for result in admin.create_topics(&topics, &AdminOptions::new()).await.expect("create topics") {
        result.expect("topic created");
    }
}

/// Creates `names` and their dead-letter topics, as kafka-init does.
pub async fn create_topics_with_dead_letters(settings: &KafkaSettings, names: &[&str]) {
    let dead_letters: Vec<String> = names.iter().map(|name| schema::topics::dead_letter(name)).collect();
    let all: Vec<&str> = names.iter().copied().chain(dead_letters.iter().map(String::as_str)).collect();
    create_topics(settings, &all).await;
}

/// Reads `topic` from the beginning until `count` messages arrived or `timeout` passed.
pub async fn read_topic(settings: &KafkaSettings, topic: &str, count: usize, timeout: Duration) -> Vec<OwnedMessage> {
    read_topic_until(settings, topic, timeout, |messages| messages.len() >= count).await
}

/// Reads `topic` from the beginning until `done` says so or `timeout` passed.
pub async fn read_topic_until(
    settings: &KafkaSettings,
    topic: &str,
    timeout: Duration,
    done: impl Fn(&[OwnedMessage]) -> bool,
) -> Vec<OwnedMessage> {
    let group = format!("reader-{}", uuid::Uuid::new_v4().simple());
    let consumer = platform::kafka::consumer(settings, &group).expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut messages = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while !done(&messages) {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(message)) => messages.push(message.detach()),
            Ok(Err(error)) => tracing::warn!(%error, "reader error"),
            Err(_) => break,
        }
    }
    messages
}

/// Publishes a message as it was, same key, same payload: a duplicate delivery.
pub async fn republish(settings: &KafkaSettings, message: &OwnedMessage) {
    let producer = platform::kafka::producer(settings).expect("producer");
    let key = message.key().expect("key");
    let payload = message.payload().expect("payload");
    producer
        .send(FutureRecord::to(message.topic()).key(key).payload(payload), Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .expect("republished");
}

/// The event type of a message, from its body.
pub fn event_type(message: &OwnedMessage) -> String {
    let envelope = schema::RawEnvelope::from_slice(message.payload().unwrap_or_default()).expect("an envelope");
    envelope.event_type
}

/// The Kafka key (the order id) of a message.
pub fn key(message: &OwnedMessage) -> String {
    String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned()
}

/// Reads `topic`'s dead-letter topic until it holds `count` letters (or 30 s passed).
pub async fn dead_letters(
    settings: &KafkaSettings,
    topic: &str,
    count: usize,
) -> Vec<messaging::dead_letter::DeadLetter> {
    let dlq = schema::topics::dead_letter(topic);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (settings, reading) = (settings.clone(), dlq.clone());
        let letters = tokio::task::spawn_blocking(move || {
            messaging::dead_letter::read_all(&settings, &reading, Duration::from_secs(10))
        })
        .await
        .expect("reader")
        .expect("dead-letter topic readable");
        if letters.len() >= count || tokio::time::Instant::now() > deadline {
            return letters;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Publishes raw bytes to `topic` under `key`, as a hostile or broken producer would.
pub async fn publish_raw(producer: &rdkafka::producer::FutureProducer, topic: &str, key: &str, payload: &[u8]) {
    producer
        .send(FutureRecord::to(topic).key(key).payload(payload), Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .expect("published");
}

/// The operator's `dlq` tool, on `settings`' brokers and signed in as its principal.
pub fn dlq(settings: &KafkaSettings) -> std::process::Command {
    let mut command = std::process::Command::new(crate::processes::binary("dlq"));
    command
        .env("KAFKA_USERNAME", &settings.username)
        .env("KAFKA_PASSWORD", settings.password.expose())
        .args(["--brokers", &settings.brokers]);
    command
}

/// Runs `dlq redrive` for the dead letter `letter` of `topic`, its payload replaced by `payload`
/// (a whole envelope), as an operator would.
pub fn redrive_with_payload(
    settings: &KafkaSettings,
    topic: &str,
    letter: &messaging::dead_letter::DeadLetter,
    payload: &str,
) {
    let file = std::env::temp_dir().join(format!("redrive-{}-{}.json", std::process::id(), letter.dlq_offset));
    std::fs::write(&file, payload).expect("write the payload");
    let at = format!("{}/{}", letter.dlq_partition, letter.dlq_offset);
    let output = dlq(settings)
        .args(["redrive", topic, "--at", &at])
        .arg("--payload-file")
        .arg(&file)
        .output()
        .expect("dlq runs");
    let _ = std::fs::remove_file(&file);
    assert!(output.status.success(), "dlq redrive: {}", String::from_utf8_lossy(&output.stderr));
}
