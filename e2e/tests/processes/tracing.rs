use std::time::Duration;

use e2e::processes::Processes;
use rdkafka::Message as _;
use rdkafka::message::Headers as _;
use serde_json::json;

/// The headers of a message, as text.
fn headers(message: &rdkafka::message::OwnedMessage) -> Vec<(String, String)> {
    message
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn one_orders_correlation_id_travels_through_both_events_and_into_the_completion_log() {
    let mut system = Processes::prepare(None).await;
    system.start_all().await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let body = json!({"lines": [{"sku": "MUG-01", "quantity": 1}]});
    let response = system
        .http
        .post(format!("{}/orders", system.order.url()))
        .header("Idempotency-Key", "traced-1")
        .header("X-Correlation-Id", "corr-4711")
        .header("traceparent", traceparent)
        .json(&body)
        .send()
        .await
        .expect("answers");
    assert!(response.status().is_success());
    system.settle(Duration::from_secs(60)).await;

    let settings = platform::config::KafkaSettings { brokers: system.brokers.clone(), ..e2e::kafka_settings() };
    for (topic, event_type) in [(&system.topics.orders, "OrderPlaced"), (&system.topics.inventory, "InventoryReserved")]
    {
        let messages = e2e::kafka::read_topic(&settings, topic, 1, Duration::from_secs(20)).await;
        let message = messages.first().unwrap_or_else(|| panic!("{event_type} on {topic}"));
        let envelope = schema::RawEnvelope::from_slice(message.payload().unwrap_or_default()).expect("envelope");
        assert_eq!((envelope.event_type.as_str(), envelope.correlation_id.as_str()), (event_type, "corr-4711"));
        assert_eq!(envelope.traceparent.as_deref(), Some(traceparent), "{event_type} carries the trace");
        let headers = headers(message);
        assert!(headers.contains(&("correlation_id".into(), "corr-4711".into())), "{headers:?}");
        assert!(headers.contains(&("traceparent".into(), traceparent.into())), "{headers:?}");
        assert!(headers.contains(&("event_type".into(), event_type.into())), "{headers:?}");
    }

    let log = std::fs::read_to_string(system.logs.join("order.log")).expect("order log");
    let completion = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["message"] == "order completed a step")
        .expect("a completion line in the order service's log");
    assert_eq!(completion["correlation_id"], "corr-4711", "{completion}");
    system.stop().await;
}
