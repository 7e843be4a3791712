//! One trace per order, read back from a real Jaeger (decision 0029): every hop is there, each
//! span's parent is in the trace, and both Kafka hops keep the chain; a collector that is
//! down costs the orders nothing and its dropped spans are counted. A shipment is a trace of its
//! own, checked the same way.

use std::collections::HashMap;
use std::time::Duration;

use e2e::processes::{Jaeger, Processes};
use serde_json::{Value, json};

/// One span as the checks need it.
#[derive(Debug, Clone)]
struct Span {
    id: String,
    parent: Option<String>,
    service: String,
    name: String,
}

fn spans_of(trace: &Value) -> Vec<Span> {
    let services: HashMap<&str, &str> = trace["processes"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(id, p)| Some((id.as_str(), p["serviceName"].as_str()?)))
        .collect();
    trace["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| Span {
            id: s["spanID"].as_str().unwrap_or_default().to_owned(),
            parent: s["references"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["refType"] == "CHILD_OF")
                .and_then(|r| r["spanID"].as_str().map(str::to_owned)),
            service: s["processID"].as_str().and_then(|p| services.get(p)).unwrap_or(&"?").to_string(),
            name: s["operationName"].as_str().unwrap_or_default().to_owned(),
        })
        .collect()
}

/// The names, root first, of `span`'s ancestors within `spans`.
fn ancestry(spans: &[Span], span: &Span) -> Vec<String> {
    let by_id: HashMap<&str, &Span> = spans.iter().map(|s| (s.id.as_str(), s)).collect();
    let mut names = vec![];
    let mut at = span;
    while let Some(parent) = at.parent.as_deref().and_then(|p| by_id.get(p)) {
        names.push(format!("{}:{}", parent.service, parent.name));
        at = parent;
        assert!(names.len() < 100, "a cycle of parents");
    }
    names.reverse();
    names
}

/// What a trace must hold, in (service, name) pairs, once its reply has come back: the
/// request and its step in the order service, the event there and the answer back.
fn hops_of(system: &Processes, request: &str, step: &str, there: &str, back: &str) -> Vec<(&'static str, String)> {
    let (orders, inventory) = (&system.topics.orders, &system.topics.inventory);
    vec![
        ("order", request.into()),
        ("order", step.into()),
        ("order", "order.wait".into()),
        ("relay", "outbox.wait".into()),
        ("relay", "relay.publish".into()),
        ("inventory", "kafka".into()),
        ("inventory", format!("consume {orders}")),
        ("inventory", "inbox.dedup".into()),
        ("inventory", format!("handle {there}")),
        ("order", "kafka".into()),
        ("order", format!("consume {inventory}")),
        ("order", format!("handle {back}")),
    ]
}

/// A placement's trace.
fn hops(system: &Processes) -> Vec<(&'static str, String)> {
    hops_of(system, "POST /orders", "order.accept", "OrderPlaced", "InventoryReserved")
}

/// A shipment's trace, once the order is SHIPPED.
fn ship_hops(system: &Processes) -> Vec<(&'static str, String)> {
    hops_of(system, "POST /orders/{id}/ship", "order.ship", "OrderReadyToShip", "InventoryShipped")
}

fn missing(spans: &[Span], wanted: &[(&'static str, String)]) -> Vec<String> {
    wanted
        .iter()
        .filter(|(service, name)| !spans.iter().any(|s| s.service == *service && s.name == *name))
        .map(|(service, name)| format!("{service}:{name}"))
        .collect()
}

/// The one trace of order `id` that starts with `first` (its `order.accept` or `order.ship`),
/// once it has every hop in `wanted`, both publishes, one root (the request) and no span whose
/// parent is missing, and no trace tagged with the order starts elsewhere; fails after 30 s
/// with what it has.
async fn whole_trace(
    jaeger: &Jaeger,
    system: &Processes,
    id: &str,
    first: &str,
    wanted: &[(&'static str, String)],
) -> (Value, Vec<Span>) {
    let starts = |spans: &[Span], name: &str| spans.iter().any(|s| s.service == "order" && s.name == name);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (trace, spans) = loop {
        let tagged = jaeger.traces_tagged("order", "order_id", id).await;
        let stray = tagged.iter().any(|t| {
            let spans = spans_of(t);
            !starts(&spans, "order.accept") && !starts(&spans, "order.ship")
        });
        let traces: Vec<&Value> = tagged.iter().filter(|t| starts(&spans_of(t), first)).collect();
        if let ([trace], false) = (traces.as_slice(), stray) {
            let spans = spans_of(trace);
            if missing(&spans, wanted).is_empty() && spans.iter().filter(|s| s.name == "relay.publish").count() == 2 {
                break ((*trace).clone(), spans);
            }
        }
        let seen: Vec<Vec<String>> =
            tagged.iter().map(|t| spans_of(t).iter().map(|s| format!("{}:{}", s.service, s.name)).collect()).collect();
        assert!(
            tokio::time::Instant::now() < deadline,
            "order {id}: want one trace with {wanted:?}; have {seen:?} (logs: {})",
            system.logs.display()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // One root, the request; every other span's parent is in the trace (no orphans).
    let ids_in_trace: std::collections::HashSet<&str> = spans.iter().map(|s| s.id.as_str()).collect();
    let roots: Vec<&Span> = spans.iter().filter(|s| s.parent.is_none()).collect();
    assert_eq!(roots.len(), 1, "order {id}: roots {roots:?}");
    assert_eq!((roots[0].service.as_str(), roots[0].name.clone()), wanted[0], "order {id}");
    let orphans: Vec<&Span> =
        spans.iter().filter(|s| s.parent.as_deref().is_some_and(|p| !ids_in_trace.contains(p))).collect();
    assert!(orphans.is_empty(), "order {id}: spans whose parent is not in the trace: {orphans:?}");
    (trace, spans)
}

#[tokio::test]
async fn every_order_is_one_trace_whose_hops_chain_across_both_kafka_topics() {
    let mut system = Processes::prepare(None).await;
    let jaeger = Jaeger::start(system.logs.join("jaeger.log")).await;
    let query = jaeger.query_url();
    for service in [&mut system.order, &mut system.inventory, &mut system.relay] {
        service.set_env("OTEL_EXPORTER_OTLP_ENDPOINT", &jaeger.endpoint());
    }
    system.order.set_env("ORDER__PEERS__TRACES", &query);
    system.start_all().await;

    let body = json!({"lines": [{"sku": "MUG-01", "quantity": 1}]});
    let mut ids = vec![];
    for n in 0..5 {
        let (status, order) = system.post(&format!("traced-{n}"), &body, "5").await.expect("answers");
        assert_eq!(status, 201, "{order}");
        ids.push(order["id"].as_str().expect("id").to_owned());
    }
    system.settle(Duration::from_secs(60)).await;

    let wanted = hops(&system);
    for id in &ids {
        let (trace, spans) = whole_trace(&jaeger, &system, id, "order.accept", &wanted).await;

        // The way back hangs from the way there: the order's handling of InventoryReserved
        // descends from inventory's handling of OrderPlaced, through both Kafka hops.
        let back = spans
            .iter()
            .find(|s| s.service == "order" && s.name == "handle InventoryReserved")
            .expect("the order service's handling");
        let chain = ancestry(&spans, back);
        let expected = [
            "order:POST /orders",
            "order:order.accept",
            "relay:relay.publish",
            "inventory:kafka",
            &format!("inventory:consume {}", system.topics.orders),
            "relay:relay.publish",
            "order:kafka",
            &format!("order:consume {}", system.topics.inventory),
        ];
        assert_eq!(chain, expected, "order {id}: trace {}", trace["traceID"]);
    }

    // The page's route draws the same trace.
    let drawn: Value = system
        .http
        .get(format!("{}/orders/{}/trace", system.order.url(), ids[0]))
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("json");
    let bars = drawn["traces"][0]["spans"].as_array().expect("bars");
    assert!(bars.len() >= wanted.len(), "{drawn}");
    assert_eq!(bars[0]["name"], "POST /orders", "{drawn}");

    // A shipment is a trace of its own, from the operator's request to the order's SHIPPED.
    let shipped = system
        .http
        .post(format!("{}/orders/{}/ship", system.order.url(), ids[0]))
        .bearer_auth(system.keys.operator_token("packer-1"))
        .header("Idempotency-Key", "ship-traced-0")
        .header("Prefer", "wait=5")
        .send()
        .await
        .expect("answers");
    assert_eq!(shipped.status(), 200, "{:?}", shipped.text().await);
    let shipment = ship_hops(&system);
    whole_trace(&jaeger, &system, &ids[0], "order.ship", &shipment).await;
    system.stop().await;
}

#[tokio::test]
async fn with_the_collector_down_orders_are_unaffected_and_dropped_spans_are_counted() {
    let mut system = Processes::prepare(None).await;
    // Nothing listens there.
    let nowhere = format!("http://127.0.0.1:{}", e2e::free_port());
    for service in [&mut system.order, &mut system.inventory, &mut system.relay] {
        service.set_env("OTEL_EXPORTER_OTLP_ENDPOINT", &nowhere);
    }
    system.start_all().await;
    let body = json!({"lines": [{"sku": "MUG-01", "quantity": 1}]});
    for n in 0..10 {
        let (status, order) = system.post(&format!("untraced-{n}"), &body, "5").await.expect("answers");
        assert_eq!((status, order["status"].as_str()), (201, Some("CONFIRMED")), "{order}");
    }
    system.settle(Duration::from_secs(60)).await;
    let (status, health) = system.health(&system.order).await.expect("health answers");
    assert_eq!(status, 200, "{health}");

    let metrics = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = metrics
            .get(format!("{}/metrics", system.order.url()))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        let dropped: f64 = text
            .lines()
            .filter(|l| l.starts_with("trace_spans_total{outcome=\"dropped_export_failed\"}"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if dropped > 0.0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no dropped spans counted:\n{text}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    system.stop().await;
}
