//! `POST /orders` waits for the outcome up to its budget, then answers 202 with a message.

use std::time::{Duration, Instant};

use e2e::{Options, TestSystem};
use inventory::gremlin::Pattern;
use serde_json::{Value, json};

/// What a request may add to its budget (see README, "Waiting for the outcome").
const MARGIN: Duration = Duration::from_millis(250);

/// How early a pending answer may come: the wait keeps this much of the budget for the
/// last re-read of the order.
const REREAD: Duration = Duration::from_millis(100);

#[tokio::test]
async fn an_order_decided_within_the_budget_is_answered_201_with_its_final_status() {
    let system = TestSystem::start().await;
    let body = json!({"lines": [{"sku": "MUG-01", "quantity": 1}]});

    let response = system.post_order("fast", &body).await;

    assert_eq!(response.status(), 201);
    assert!(response.headers().get("location").is_some());
    let order: Value = response.json().await.expect("json");
    assert_eq!(order["status"], "CONFIRMED");
    assert!(order.get("message").is_none());
    system.stop().await;
}

#[tokio::test]
async fn with_the_gremlin_slowing_one_order_in_four_the_slow_ones_get_202_in_budget_and_all_confirm() {
    let pattern = Pattern { enabled: true, one_in: 4, delay_ms: 5_000 };
    let system = TestSystem::start_with(Options { gremlin: pattern, ..Options::default() }).await;
    let budget = Duration::from_secs(2);

    // Order ids are random, so the number of slow ones is too: place orders until there are
    // at least three of each kind (each verdict is still predicted from the id alone).
    let mut placed: Vec<String> = Vec::new();
    let slow_count = |placed: &[String]| placed.iter().filter(|id| pattern.is_slow(id)).count();
    for i in 0..60 {
        if slow_count(&placed) >= 3 && placed.len() - slow_count(&placed) >= 3 {
            break;
        }
        let body = json!({"lines": [{"sku": "CABLE-01", "quantity": 1}]});
        let started = Instant::now();
        let response = system.post_order(&format!("gremlin-{i}"), &body).await;
        let took = started.elapsed();
        let status = response.status().as_u16();
        let order: Value = response.json().await.expect("json");
        let id = order["id"].as_str().expect("id").to_owned();
        if pattern.is_slow(&id) {
            assert_eq!(status, 202, "predicted slow: {order}");
            assert_eq!(order["status"], "PENDING");
            assert!(order["message"].as_str().expect("a message").contains("no need to order again"));
            assert!(took >= budget - REREAD && took <= budget + MARGIN, "answered in {took:?}");
        } else {
            assert_eq!((status, order["status"].as_str()), (201, Some("CONFIRMED")), "predicted fast: {order}");
        }
        placed.push(id);
    }
    assert!(slow_count(&placed) >= 3, "60 orders include three slow ones");
    for id in &placed {
        assert_eq!(system.settled(id).await["status"], "CONFIRMED");
    }
    assert_eq!(system.gremlin.delays(), placed.iter().filter(|id| pattern.is_slow(id)).count() as u64);
    system.assert_books_balance().await;
    system.stop().await;
}

#[tokio::test]
async fn a_client_may_ask_to_wait_less_and_never_waits_more_than_the_budget() {
    let pattern = Pattern { enabled: true, one_in: 1, delay_ms: 3_000 };
    let system =
        TestSystem::start_with(Options { gremlin: pattern, wait_budget_ms: 1_000, ..Options::default() }).await;
    let body = json!({"lines": [{"sku": "CABLE-01", "quantity": 1}]});
    let post = |key: &'static str, prefer: &'static str| {
        system
            .http
            .post(format!("{}/orders", system.order_url))
            .header("Idempotency-Key", key)
            .header("Prefer", prefer)
            .json(&body)
            .send()
    };

    let started = Instant::now();
    let now = post("a", "wait=0").await.expect("answers");
    assert!(started.elapsed() < MARGIN, "wait=0 answers at once ({:?})", started.elapsed());
    assert_eq!(now.status(), 202);
    assert_eq!(now.headers().get("preference-applied").map(|v| v.as_bytes()), Some(&b"wait=0"[..]));

    let started = Instant::now();
    let greedy = post("b", "wait=60").await.expect("answers");
    let took = started.elapsed();
    assert_eq!(greedy.status(), 202);
    assert!(
        took >= Duration::from_secs(1) - REREAD && took <= Duration::from_secs(1) + MARGIN,
        "capped at the budget: {took:?}"
    );
    system.stop().await;
}
