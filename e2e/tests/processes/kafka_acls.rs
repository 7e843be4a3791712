//! The broker knows who writes what (decision 0028): with the ACLs kafka-init grants, a
//! service's principal can do its own work and nothing else, and a client that cannot sign
//! in gets nothing at all.

use std::time::Duration;

use e2e::processes::Processes;
use platform::config::{KafkaSettings, Secret};
use rdkafka::Message as _;
use rdkafka::consumer::Consumer as _;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureRecord;

/// The test run's settings, signed in as `principal` with `password`.
fn as_principal(system: &Processes, principal: &str, password: &str) -> KafkaSettings {
    KafkaSettings {
        brokers: system.brokers.clone(),
        username: principal.to_owned(),
        password: Secret::new(password),
        ..e2e::kafka_settings()
    }
}

fn signed_in(system: &Processes, principal: &str) -> KafkaSettings {
    let password = e2e::kafka_password(principal).expect("the broker requires sign-in: run through scripts/test");
    as_principal(system, principal, &password)
}

/// Sends one message and returns how the broker answered.
async fn produce(settings: &KafkaSettings, topic: &str, key: &str) -> Result<(), KafkaError> {
    let producer = platform::kafka::producer(settings).expect("producer");
    let record = FutureRecord::to(topic).key(key).payload("{\"forged\": true}");
    producer.send(record, Duration::from_secs(10)).await.map(drop).map_err(|(error, _)| error)
}

/// Sends as [`produce`] does until the broker accepts: ACLs reach the broker's cache a moment
/// after the controller took them.
async fn produce_once_granted(settings: &KafkaSettings, topic: &str, key: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match produce(settings, topic, key).await {
            Ok(()) => return,
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::info!(%error, "not yet granted");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("{} writing {topic}: {error}", settings.username),
        }
    }
}

fn refused_for_the_topic(result: &Result<(), KafkaError>) -> bool {
    matches!(result, Err(KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed)))
}

#[tokio::test(flavor = "multi_thread")]
async fn each_principal_does_its_own_work_and_nothing_else() {
    let system = Processes::prepare(None).await;
    system.create_topics().await; // with the services' ACLs, by kafka-init
    let (orders, inventory) = (&system.topics.orders, &system.topics.inventory);

    // The relay publishes both services' events: allowed.
    produce_once_granted(&signed_in(&system, "relay"), orders, "relay-may").await;
    produce_once_granted(&signed_in(&system, "relay"), inventory, "relay-may").await;

    // The order service reads inventory's answers; it may not forge them, nor its own events
    // (those go through its outbox and the relay). Nor may a pure reader write anything.
    let refused = [
        ("order", inventory.as_str()),
        ("order", orders.as_str()),
        ("inventory", orders.as_str()),
        ("notifications", orders.as_str()),
        ("notifications", inventory.as_str()),
    ];
    for (principal, topic) in refused {
        let result = produce(&signed_in(&system, principal), topic, &format!("forged-by-{principal}")).await;
        assert!(refused_for_the_topic(&result), "{principal} writing {topic}: {result:?}");
    }

    // Read back as the super user: only the relay's two messages are there.
    let admin = signed_in(&system, "admin");
    for topic in [orders, inventory] {
        let read = e2e::kafka::read_topic(&admin, topic, 2, Duration::from_secs(5)).await;
        let keys: Vec<String> = read.iter().map(e2e::kafka::key).collect();
        assert_eq!(keys, ["relay-may"], "{topic} holds only what the relay wrote");
    }

    // A consumer reads its input in its own group, never in another's.
    let own_group = format!("{}-inventory", system.name);
    let reader = platform::kafka::consumer(&signed_in(&system, "inventory"), &own_group).expect("consumer");
    reader.subscribe(&[orders]).expect("subscribe");
    let message = tokio::time::timeout(Duration::from_secs(20), reader.recv()).await.expect("inventory reads orders");
    assert_eq!(message.expect("a message").key(), Some(&b"relay-may"[..]));
    drop(reader);

    let foreign = platform::kafka::consumer(&signed_in(&system, "inventory"), &format!("{}-order", system.name))
        .expect("consumer");
    foreign.subscribe(&[orders]).expect("subscribe");
    match tokio::time::timeout(Duration::from_secs(20), foreign.recv()).await {
        Ok(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::GroupAuthorizationFailed))) => {}
        other => panic!("inventory in order's group: {:?}", other.map(|r| r.map(|m| m.offset()))),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_without_credentials_or_with_wrong_ones_gets_nothing() {
    let system = Processes::prepare(None).await;
    system.create_topics().await;
    let orders = &system.topics.orders;
    produce_once_granted(&signed_in(&system, "relay"), orders, "secret").await;

    let anonymous =
        KafkaSettings { username: String::new(), password: Secret::default(), ..signed_in(&system, "admin") };
    let wrong = as_principal(&system, "inventory", "not-the-password");
    for (who, settings) in [("no credentials", anonymous), ("a wrong password", wrong)] {
        // Not even the cluster's metadata...
        let probe = platform::kafka::BrokerProbe::new(&settings, Some(orders)).expect("probe");
        assert!(probe.check(Duration::from_secs(3)).await.is_err(), "{who}: the broker answered metadata");
        // ...nor a single event, nor a write.
        let reader = platform::kafka::consumer(&settings, &format!("{}-inventory", system.name)).expect("consumer");
        reader.subscribe(&[orders]).expect("subscribe");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while let Ok(received) = tokio::time::timeout_at(deadline, reader.recv()).await {
            assert!(received.is_err(), "{who}: an event was delivered");
        }
        let written = produce(&KafkaSettings { message_timeout_ms: 3_000, ..settings.clone() }, orders, "forged").await;
        assert!(written.is_err(), "{who}: a write was accepted");
    }
}
