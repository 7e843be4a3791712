use e2e::TestSystem;
use serde_json::{Value, json};

#[tokio::test]
async fn the_same_key_posted_five_times_concurrently_makes_one_order_and_one_deduction() {
    let system = TestSystem::start().await;
    let before = system.stock("KEYBOARD-01").await;
    let body = json!({"lines": [{"sku": "KEYBOARD-01", "quantity": 2}]});

    let attempts = (0..5).map(|_| system.post_order("retry-me", &body));
    let responses = futures::future::join_all(attempts).await;
    let mut ids = Vec::new();
    for response in responses {
        assert!(matches!(response.status().as_u16(), 201 | 202), "{}", response.status());
        ids.push(response.json::<Value>().await.expect("json")["id"].as_str().expect("id").to_owned());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every attempt got the same order");
    let order = system.settled(&ids[0]).await;
    assert_eq!(order["status"], "CONFIRMED");

    // A later retry, after the outcome, still gets the same order and writes nothing.
    let late = system.post_order("retry-me", &body).await;
    assert_eq!(late.headers().get("idempotent-replayed").map(|v| v.as_bytes()), Some(&b"true"[..]));
    assert_eq!(late.json::<Value>().await.expect("json")["id"], ids[0].as_str());

    assert_eq!(system.stock("KEYBOARD-01").await, before - 2);
    let report = system.books().await;
    assert_eq!(report.orders(), 1);
    assert!(report.is_clean(), "{}", checker::render(&report));
    system.stop().await;
}

#[tokio::test]
async fn the_same_key_with_a_different_body_is_a_conflict_that_names_the_first_order() {
    let system = TestSystem::start().await;
    let first = system.post_order("k", &json!({"lines": [{"sku": "MUG-01", "quantity": 1}]})).await;
    let id = first.json::<Value>().await.expect("json")["id"].as_str().expect("id").to_owned();

    let second = system.post_order("k", &json!({"lines": [{"sku": "MUG-01", "quantity": 5}]})).await;

    assert_eq!(second.status(), 409);
    let body: Value = second.json().await.expect("json");
    assert_eq!(body["error"], "idempotency_key_reused");
    assert!(body["message"].as_str().expect("message").contains(&id));
    assert_eq!(system.books().await.orders(), 1);
    system.stop().await;
}
