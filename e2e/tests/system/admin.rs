//! Admin endpoints are off unless a token is configured, and need it when on.

use e2e::{Options, TestSystem};
use serde_json::{Value, json};

/// The admin token of these tests' systems.
const TOKEN: &str = "s3cret-admin-token-of-the-test";

#[tokio::test]
async fn without_a_configured_token_there_are_no_admin_endpoints() {
    let system = TestSystem::start().await;
    let response = system
        .http
        .get(format!("{}/admin/gremlin", system.inventory_url))
        .bearer_auth("anything")
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 404);
    let response = system.http.get(format!("{}/admin/crash-points", system.order_url)).send().await.expect("answers");
    assert_eq!(response.status(), 404);
    system.stop().await;
}

#[tokio::test]
async fn a_wrong_or_missing_token_is_refused_and_changes_nothing() {
    let system = TestSystem::start_with(Options { admin_token: Some(TOKEN.into()), ..Options::default() }).await;
    let url = format!("{}/admin/gremlin", system.inventory_url);
    let slow = json!({"enabled": true, "one_in": 1, "delay_ms": 100});

    for request in [
        system.http.put(&url).json(&slow),
        system.http.put(&url).bearer_auth("wrong").json(&slow),
        system.http.put(&url).header("Authorization", TOKEN).json(&slow),
    ] {
        let response = request.send().await.expect("answers");
        assert_eq!(response.status(), 401);
        assert_eq!(response.headers().get("www-authenticate").map(|v| v.as_bytes()), Some(&b"Bearer"[..]));
    }
    assert!(!system.gremlin.pattern().enabled, "state unchanged");

    let response = system.http.put(&url).bearer_auth(TOKEN).json(&slow).send().await.expect("answers");
    assert_eq!(response.status(), 200);
    assert!(system.gremlin.pattern().enabled);
    let current: Value =
        system.http.get(&url).bearer_auth(TOKEN).send().await.expect("answers").json().await.expect("json");
    assert_eq!(current["pattern"], slow);

    let invalid = system
        .http
        .put(&url)
        .bearer_auth(TOKEN)
        .json(&json!({"enabled": true, "one_in": 0, "delay_ms": 1}))
        .send()
        .await
        .expect("answers");
    assert_eq!(invalid.status(), 400);

    // The scheme is case-insensitive; a product name Postgres cannot store is a 400, not a 500.
    let product = format!("{}/admin/products/NUL-01", system.inventory_url);
    for (name, status) in [("mug\u{0}cup", 400), ("bell\u{7}", 400), ("Plain mug", 201)] {
        let response = system
            .http
            .put(&product)
            .header("Authorization", format!("bearer {TOKEN}"))
            .json(&json!({"name": name, "stock": 5}))
            .send()
            .await
            .expect("answers");
        assert_eq!(response.status(), status, "{name:?}");
    }
    system.stop().await;
}

#[tokio::test]
async fn crash_points_are_listed_and_armed_through_the_admin_endpoint() {
    let system = TestSystem::start_with(Options { admin_token: Some(TOKEN.into()), ..Options::default() }).await;
    let url = format!("{}/admin/crash-points", system.order_url);

    let points: Value =
        system.http.get(&url).bearer_auth(TOKEN).send().await.expect("answers").json().await.expect("json");
    assert_eq!(points["order.after_commit_before_reply"], "off");

    let unknown = system
        .http
        .put(format!("{url}/no.such.point"))
        .bearer_auth(TOKEN)
        .json(&json!({"action": "abort"}))
        .send()
        .await
        .expect("answers");
    assert_eq!(unknown.status(), 404);
    let bad = system
        .http
        .put(format!("{url}/relay.after_publish_before_position"))
        .bearer_auth(TOKEN)
        .json(&json!({"action": "explode"}))
        .send()
        .await
        .expect("answers");
    assert_eq!(bad.status(), 400);
    let unauthorized = system
        .http
        .put(format!("{url}/relay.after_publish_before_position"))
        .json(&json!({"action": "abort"}))
        .send()
        .await
        .expect("answers");
    assert_eq!(unauthorized.status(), 401);
    system.stop().await;
}

#[tokio::test]
async fn a_customer_over_the_rate_limit_gets_429_with_retry_after() {
    let admission = order::admission::AdmissionSettings {
        per_customer_per_second: 1.0,
        per_customer_burst: 2.0,
        max_in_flight: 100,
        ..order::admission::AdmissionSettings::default()
    };
    let system = TestSystem::start_with(Options { admission, ..Options::default() }).await;
    let body = json!({"lines": [{"sku": "MUG-01", "quantity": 1}]});
    let greedy = system.keys.client("greedy", std::time::Duration::from_secs(10));
    let mut statuses = Vec::new();
    for i in 0..3 {
        let response = greedy
            .post(format!("{}/orders", system.order_url))
            .header("Idempotency-Key", format!("r{i}"))
            .header("Prefer", "wait=0")
            .json(&body)
            .send()
            .await
            .expect("answers");
        if response.status() == 429 {
            assert_eq!(response.headers().get("retry-after").map(|v| v.as_bytes()), Some(&b"1"[..]));
        }
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [202, 202, 429]);
    let other = system.post_order_as("patient", "other", &body).await;
    assert_eq!(other.status().as_u16() / 100, 2, "other customers are unaffected");
    system.stop().await;
}

#[tokio::test]
async fn a_burst_of_wrong_tokens_is_throttled_and_the_right_one_works_a_second_later() {
    let system = TestSystem::start_with(Options { admin_token: Some(TOKEN.into()), ..Options::default() }).await;
    let url = format!("{}/admin/crash-points", system.order_url);
    let mut statuses = Vec::new();
    for guess in 0..30 {
        let response = system.http.get(&url).bearer_auth(format!("guess-{guess}")).send().await.expect("answers");
        statuses.push(response.status().as_u16());
    }
    let throttled = statuses.iter().filter(|&&s| s == 429).count();
    assert!(statuses.iter().all(|s| [401, 429].contains(s)), "{statuses:?}");
    assert!(throttled >= 20, "only {throttled} of 30 guesses were throttled: {statuses:?}");
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    let right = system.http.get(&url).bearer_auth(TOKEN).send().await.expect("answers");
    assert_eq!(right.status(), 200, "the right token, once the burst is over");
    system.stop().await;
}
