//! What a stranger or a single customer sends cannot grow the service's state without bound,
//! crash a handler, or take the capacity every other customer shares (issue 35, items 1–3).

use std::time::Duration;

use e2e::TestSystem;
use reqwest::StatusCode;
use reqwest::header::{ETAG, IF_NONE_MATCH, RETRY_AFTER};

/// The HTTP duration series in the order service's `/metrics`, and the size of the page.
async fn http_series(system: &TestSystem) -> (usize, usize) {
    let text = system.http.get(format!("{}/metrics", system.order_url)).send().await.expect("answers");
    let text = text.text().await.expect("text");
    (text.lines().filter(|l| l.starts_with("http_request_duration_seconds_count")).count(), text.len())
}

#[tokio::test]
async fn ten_thousand_invented_methods_add_no_metric_series() {
    let system = TestSystem::start().await;
    let anonymous = e2e::client_builder(Duration::from_secs(10)).build().expect("client");
    let send = |i: usize| {
        let method = reqwest::Method::from_bytes(format!("MFOO{i}").as_bytes()).expect("a method token");
        anonymous.request(method, format!("{}/orders", system.order_url)).send()
    };
    // The first ones make the series that any request of their kind will use.
    for i in 0..10 {
        let answer = send(i).await.expect("answers");
        assert!(answer.status().is_client_error(), "an invented method is a 4xx: {}", answer.status());
    }
    let (series_before, bytes_before) = http_series(&system).await;
    for chunk in (10..10_000).collect::<Vec<_>>().chunks(50) {
        for answer in futures::future::join_all(chunk.iter().map(|&i| send(i))).await {
            assert!(answer.expect("answers").status().is_client_error());
        }
    }
    let (series_after, bytes_after) = http_series(&system).await;
    println!("http series {series_before} -> {series_after}, /metrics {bytes_before} -> {bytes_after} bytes");
    // The scrapes themselves add one series (GET /metrics 200) at most.
    assert!(series_after <= series_before + 1, "series grew from {series_before} to {series_after}");
    assert!(bytes_after < bytes_before + 4_096, "/metrics grew from {bytes_before} to {bytes_after} bytes");
    system.stop().await;
}

#[tokio::test]
async fn a_wait_of_any_size_is_answered_not_a_crash() {
    let system = TestSystem::start().await;
    let body = serde_json::json!({"lines": [{"sku": "MUG-01", "quantity": 1}]});
    let placed = system
        .http
        .post(format!("{}/orders", system.order_url))
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .header("Prefer", "wait=1e20")
        .json(&body)
        .send()
        .await
        .expect("POST /orders answers, with a reply, not a dropped connection");
    assert!(placed.status() == StatusCode::CREATED || placed.status() == StatusCode::ACCEPTED, "{}", placed.status());
    assert_eq!(placed.headers()["preference-applied"], "wait=2", "clamped to the budget");
    let id = placed.json::<serde_json::Value>().await.expect("json")["id"].as_str().expect("id").to_owned();
    system.settled(&id).await;

    let followed = system
        .http
        .get(format!("{}/orders/{id}", system.order_url))
        .header("Prefer", "wait=1e20")
        .send()
        .await
        .expect("GET /orders/{id} answers");
    assert_eq!(followed.status(), StatusCode::OK);
    assert_eq!(followed.headers()["preference-applied"], "wait=30", "clamped to the longest follow");

    let shipped = system
        .http
        .post(format!("{}/orders/{id}/ship", system.order_url))
        .bearer_auth(system.keys.operator_token("packer-1"))
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .header("Prefer", "wait=1e20")
        .send()
        .await
        .expect("POST /orders/{id}/ship answers");
    assert!(shipped.status().is_success(), "{}", shipped.status());
    system.stop().await;
}

#[tokio::test]
async fn one_customer_cannot_hold_every_slot_with_long_polls() {
    let system = TestSystem::start().await;
    let id = system.place("MUG-01", 1).await;
    let settled = system.settled(&id).await;
    assert_eq!(settled["status"], "CONFIRMED");
    let url = format!("{}/orders/{id}", system.order_url);
    let tag = system.http.get(&url).send().await.expect("answers").headers()[ETAG].to_str().expect("etag").to_owned();
    let follow = |client: reqwest::Client| {
        let (url, tag) = (url.clone(), tag.clone());
        async move { client.get(url).header(IF_NONE_MATCH, tag).header("Prefer", "wait=5").send().await }
    };

    // The customer's fill of followers (the default cap, 16), all waiting on an order that
    // will not change.
    let followers: Vec<_> = (0..16).map(|_| tokio::spawn(follow(system.http.clone()))).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let one_more = follow(system.http.clone()).await.expect("answers");
    assert_eq!(one_more.status(), StatusCode::TOO_MANY_REQUESTS, "a 17th follower is refused");
    assert_eq!(one_more.headers()[RETRY_AFTER], "1");
    let body: serde_json::Value = one_more.json().await.expect("json");
    assert_eq!(body["error"], "too_many_waiting");

    // Nobody else is refused meanwhile: another customer follows and places as usual.
    let other = system.keys.client("someone-else", Duration::from_secs(10));
    let placed = other
        .post(format!("{}/orders", system.order_url))
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .header("Prefer", "wait=0")
        .json(&serde_json::json!({"lines": [{"sku": "MUG-01", "quantity": 1}]}))
        .send()
        .await
        .expect("answers");
    assert_eq!(placed.status(), StatusCode::ACCEPTED);
    let theirs = placed.json::<serde_json::Value>().await.expect("json")["id"].as_str().expect("id").to_owned();
    let followed = other
        .get(format!("{}/orders/{theirs}", system.order_url))
        .header("Prefer", "wait=5")
        .send()
        .await
        .expect("answers");
    assert_eq!(followed.status(), StatusCode::OK);

    for follower in followers {
        assert_eq!(follower.await.expect("task").expect("answers").status(), StatusCode::NOT_MODIFIED);
    }
    // Their waits over, the customer may follow again.
    let again =
        system.http.get(&url).header(IF_NONE_MATCH, &tag).header("Prefer", "wait=1").send().await.expect("answers");
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    system.stop().await;
}

#[tokio::test]
async fn fast_refusals_do_not_count_toward_the_latency_light() {
    let system = TestSystem::start().await;
    let counted = || async {
        let summary = system.http.get(format!("{}/stats/latency", system.order_url)).send().await.expect("answers");
        summary.json::<serde_json::Value>().await.expect("json")["count"].as_u64().expect("count")
    };
    let anonymous = e2e::client_builder(Duration::from_secs(10)).build().expect("client");
    let before = counted().await;
    for _ in 0..50 {
        let refused = anonymous
            .post(format!("{}/orders", system.order_url))
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .json(&serde_json::json!({"lines": [{"sku": "MUG-01", "quantity": 1}]}))
            .send()
            .await
            .expect("answers");
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(counted().await, before, "50 unauthenticated POSTs are not in the alert's average");
    system.place("MUG-01", 1).await;
    assert_eq!(counted().await, before + 1, "a placement is");
    system.stop().await;
}
