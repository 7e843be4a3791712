//! Operator controls (admin token): pause and resume a service's consumer; replay a range of
//! a topic into it, which the inbox makes harmless for what was applied already.

use std::time::Duration;

use e2e::{Options, TestSystem};
use rdkafka::consumer::Consumer as _;
use serde_json::{Value, json};

const TOKEN: &str = "operator-token-of-the-tests-0001";

/// `GET /admin{path}` with the admin token: status and JSON body.
async fn admin_get(base: &str, path: &str) -> (u16, Value) {
    send(e2e::http_client(Duration::from_secs(120)).get(format!("{base}/admin{path}"))).await
}

/// `POST /admin{path}` with the admin token and `body` as JSON, if any.
async fn admin_post(base: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let request = e2e::http_client(Duration::from_secs(120)).post(format!("{base}/admin{path}"));
    send(match body {
        Some(body) => request.json(&body),
        None => request,
    })
    .await
}

async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.bearer_auth(TOKEN).send().await.expect("answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn with_admin() -> Options {
    Options { admin_token: Some(TOKEN.into()), wait_budget_ms: 1_000, ..Options::default() }
}

#[tokio::test]
async fn a_paused_inventory_consumer_leaves_orders_pending_with_the_usual_202_and_resuming_completes_them() {
    let system = TestSystem::start_with(with_admin()).await;
    let before = system.stock("MUG-01").await;
    let body = json!({"lines": [{"sku": "MUG-01", "quantity": 1}]});
    let first: Value = system.post_order("first", &body).await.json().await.expect("json");
    let first = system.settled(first["id"].as_str().expect("id")).await;
    assert_eq!(first["status"], "CONFIRMED", "the consumer works, and holds its partitions");

    let (status, state) = admin_post(&system.inventory_url, "/consumer/pause", None).await;
    assert_eq!((status, &state["paused"]), (200, &json!(true)), "{state}");
    let mut pending = Vec::new();
    for i in 0..10 {
        let response = system.post_order(&format!("paused-{i}"), &body).await;
        assert_eq!(response.status(), 202, "answered within the budget");
        let order: Value = response.json().await.expect("json");
        assert_eq!(order["status"], "PENDING");
        assert!(order["message"].as_str().expect("a message").contains("no need to order again"), "{order}");
        pending.push(order["id"].as_str().expect("id").to_owned());
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for id in &pending {
        assert_eq!(system.order(id).await["status"], "PENDING", "nothing is decided while paused");
    }
    assert_eq!(system.stock("MUG-01").await, before - 1);
    let (_, state) = admin_get(&system.inventory_url, "/consumer").await;
    assert_eq!(state["paused"], true, "{state}");
    let health: Value = system
        .http
        .get(format!("{}/health", system.inventory_url))
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("json");
    assert_eq!(health["consumer"]["paused"], true, "/health says so too: {health}");

    let (status, state) = admin_post(&system.inventory_url, "/consumer/resume", None).await;
    assert_eq!((status, &state["paused"]), (200, &json!(false)), "{state}");
    for id in &pending {
        assert_eq!(system.settled(id).await["status"], "CONFIRMED");
    }
    assert_eq!(system.stock("MUG-01").await, before - 11);
    system.assert_books_balance().await;
    system.stop().await;
}

/// Messages on `topic` so far (the sum of its partitions' high watermarks).
fn messages_on(system: &TestSystem, topic: &str) -> i64 {
    let reader = platform::kafka::reader(&system.kafka, "count").expect("reader");
    let metadata = reader.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
    let partitions: Vec<i32> = metadata.topics()[0].partitions().iter().map(|p| p.id()).collect();
    partitions.iter().map(|&p| reader.fetch_watermarks(topic, p, Duration::from_secs(10)).expect("watermarks").1).sum()
}

#[tokio::test]
async fn replaying_a_thousand_events_already_applied_changes_nothing() {
    let system = TestSystem::start_with(with_admin()).await;
    let place = async |key: String| loop {
        let response = system
            .http
            .post(format!("{}/orders", system.order_url))
            .header("Idempotency-Key", &key)
            .header("Prefer", "wait=0")
            .json(&json!({"lines": [{"sku": "CABLE-01", "quantity": 1}]}))
            .send()
            .await
            .expect("answers");
        match response.status().as_u16() {
            202 => return,
            // Overload is refused before anything is written: the same key again, later.
            503 => tokio::time::sleep(Duration::from_millis(200)).await,
            status => panic!("order {key}: {status} {}", response.text().await.unwrap_or_default()),
        }
    };
    let settled = async |confirmed: i64| {
        e2e::eventually_async("every order settled", || async {
            let report = system.books().await;
            report.is_clean() && report.orders_by_status.get("CONFIRMED") == Some(&confirmed)
        })
        .await
    };
    for batch in 0..25 {
        futures::future::join_all((0..20).map(|i| place(format!("replay-{batch}-{i}")))).await;
    }
    // Every event of the first 500 orders is published (they are confirmed) before this moment.
    settled(500).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let halfway = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for batch in 25..50 {
        futures::future::join_all((0..20).map(|i| place(format!("replay-{batch}-{i}")))).await;
    }
    settled(1_000).await;
    // The consumer group commits what it finished once a second; the replay ends there.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stock = system.stock("CABLE-01").await;
    let decisions = messages_on(&system, &system.topics.inventory);

    let orders = system.topics.orders.clone();
    for request in
        [json!({"topic": orders, "from_offset": 0}), json!({"topic": orders, "from_time": "2020-01-01T00:00:00Z"})]
    {
        let (status, report) = admin_post(&system.inventory_url, "/consumer/replay", Some(request)).await;
        assert_eq!(status, 200, "{report}");
        let counts = ["read", "duplicates", "applied", "failed", "unreadable"].map(|k| report[k].as_u64());
        assert_eq!(counts, [Some(1_000), Some(1_000), Some(0), Some(0), Some(0)], "{report}");
    }
    // Bounded by a time: the events stamped before it, the first 500 orders', and no more.
    let request = json!({"topic": orders, "from_offset": 0, "until_time": halfway});
    let (status, report) = admin_post(&system.inventory_url, "/consumer/replay", Some(request)).await;
    assert_eq!(status, 200, "{report}");
    let counts = ["read", "duplicates", "applied"].map(|k| report[k].as_u64());
    assert_eq!(counts, [Some(500), Some(500), Some(0)], "{report}");

    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(system.stock("CABLE-01").await, stock, "no stock moved");
    assert_eq!(messages_on(&system, &system.topics.inventory), decisions, "no decision published again");
    let report = system.books().await;
    assert!(report.is_clean(), "{}", checker::render(&report));
    assert_eq!(report.orders_by_status.get("CONFIRMED"), Some(&1_000));
    system.stop().await;
}

#[tokio::test]
async fn a_replay_says_what_is_wrong_with_its_request() {
    let system = TestSystem::start_with(with_admin()).await;
    let orders = system.topics.orders.clone();
    for (request, problem) in [
        (json!({"topic": "elsewhere", "from_offset": 0}), "is not consumed here"),
        (json!({"topic": orders, "from_offset": 0, "from_time": "2026-01-01T00:00:00Z"}), "exactly one of"),
        (json!({"topic": orders}), "exactly one of"),
        (json!({"topic": orders, "from_offset": -3}), "0 or more"),
        (json!({"topic": orders, "from_offset": 0, "partitions": [99]}), "no partition 99"),
        (
            json!({"topic": orders, "from_time": "2026-01-02T00:00:00Z", "until_time": "2026-01-01T00:00:00Z"}),
            "until_time must be after from_time",
        ),
    ] {
        let (status, body) = admin_post(&system.inventory_url, "/consumer/replay", Some(request.clone())).await;
        assert_eq!(status, 400, "{request}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| m.contains(problem)), "{request}: {body}");
    }
    let anonymous = e2e::http_client(Duration::from_secs(10));
    let response = anonymous.post(format!("{}/admin/consumer/pause", system.order_url)).send().await.expect("answers");
    assert_eq!(response.status(), 401, "the controls need the admin token");
    system.stop().await;
}

#[tokio::test]
async fn the_consumers_dead_letters_are_listed_and_redriven_from_the_admin_routes() {
    let system = TestSystem::start_with(with_admin()).await;
    let record = rdkafka::producer::FutureRecord::to(&system.topics.orders).partition(0).key("k").payload("{garbage");
    system.producer().send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("published");
    e2e::eventually("the garbage dead-lettered", || system.inventory_consumer.dead_lettered() == 1).await;

    let path = format!("/consumer/dead-letters?topic={}", system.topics.orders);
    let (status, letters) = admin_get(&system.inventory_url, &path).await;
    assert_eq!(status, 200, "{letters}");
    let letters = letters.as_array().expect("a list").clone();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert!(letters[0]["error"].as_str().is_some_and(|e| e.starts_with("unreadable event")), "{letters:?}");
    let at = format!("{}/{}", letters[0]["dlq_partition"], letters[0]["dlq_offset"]);

    let redrive = json!({"topic": system.topics.orders, "at": ["9/999"]});
    let (status, body) = admin_post(&system.inventory_url, "/consumer/dead-letters/redrive", Some(redrive)).await;
    assert_eq!(status, 404, "{body}");
    let redrive = json!({"topic": system.topics.orders, "at": [at]});
    let (status, body) = admin_post(&system.inventory_url, "/consumer/dead-letters/redrive", Some(redrive)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.as_array().map(Vec::len), Some(1), "{body}");
    // Still garbage: read again, and dead-lettered again.
    e2e::eventually("the redriven message consumed", || system.inventory_consumer.dead_lettered() == 2).await;
    system.stop().await;
}
