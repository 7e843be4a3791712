//! What a client sees when it gets things wrong: a 4xx that says what to fix, never a 500.

use e2e::TestSystem;
use serde_json::{Value, json};

async fn error_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.expect("an error body is JSON"))
}

#[tokio::test]
async fn bad_requests_get_a_400_that_says_what_to_fix() {
    let system = TestSystem::start().await;
    let url = format!("{}/orders", system.order_url);
    let valid = json!({"lines": [{"sku": "MUG-01", "quantity": 1}]});

    let (status, body) = error_of(system.http.post(&url).json(&valid).send().await.expect("answers")).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("idempotency_key_required")));

    let malformed = system
        .http
        .post(&url)
        .header("Idempotency-Key", "a")
        .header("Content-Type", "application/json")
        .body("{\"customer_id\":");
    let (status, body) = error_of(malformed.send().await.expect("answers")).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("malformed_body")));
    assert!(body["message"].as_str().expect("message").starts_with("the body is not valid JSON"));

    let huge = json!({"lines": [{"sku": "MUG-01", "quantity": 1}], "pad": "x".repeat(70_000)});
    let (status, body) = error_of(system.post_order("b", &huge).await).await;
    assert_eq!(status, 400);
    assert!(body["message"].as_str().expect("message").contains("limit"), "{body}");

    let not_json =
        system.http.post(&url).header("Idempotency-Key", "c").header("Content-Type", "text/plain").body("hello");
    assert_eq!(error_of(not_json.send().await.expect("answers")).await.0, 400);

    let invalid =
        json!({"customer_id": 7, "lines": [{"sku": "mug", "quantity": 0}, {"sku": "MUG-01", "quantity": 100000}]});
    let (status, body) = error_of(system.post_order("d", &invalid).await).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("validation_failed")));
    let fields: Vec<&str> = body["fields"].as_object().expect("fields").keys().map(String::as_str).collect();
    assert_eq!(fields, ["customer_id", "lines[0].quantity", "lines[0].sku", "lines[1].quantity"]);

    let (status, body) = error_of(system.post_order("e", &json!({"lines": []})).await).await;
    assert_eq!((status, body["fields"]["lines"].as_str()), (400, Some("must contain at least one line")));

    assert_eq!(system.books().await.orders(), 0, "nothing was written");
    system.stop().await;
}

#[tokio::test]
async fn reading_orders_and_stock_answers_404_and_400_plainly() {
    let system = TestSystem::start().await;
    let get = |path: String| system.http.get(path).send();

    let (status, body) =
        error_of(get(format!("{}/orders/{}", system.order_url, uuid::Uuid::new_v4())).await.expect("answers")).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    assert_eq!(error_of(get(format!("{}/orders/not-a-uuid", system.order_url)).await.expect("answers")).await.0, 400);
    // Both say what is wrong with the query, not with an order.
    for limit in ["0", "101", "abc"] {
        let (status, body) =
            error_of(get(format!("{}/orders?limit={limit}", system.order_url)).await.expect("answers")).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_query")), "limit={limit}: {body}");
    }
    let (_, body) = error_of(get(format!("{}/orders?limit=0", system.order_url)).await.expect("answers")).await;
    assert!(body["message"].as_str().expect("message").contains("from 1 to 100"), "{body}");
    let cancel_missing = system.cancel(&uuid::Uuid::new_v4().to_string()).await;
    assert_eq!(cancel_missing.status(), 404);
    assert_eq!(error_of(get(format!("{}/stock/NOPE-1", system.inventory_url)).await.expect("answers")).await.0, 404);
    assert_eq!(error_of(get(format!("{}/stock/bad sku", system.inventory_url)).await.expect("answers")).await.0, 400);
    system.stop().await;
}

#[tokio::test]
async fn orders_are_listed_newest_first() {
    let system = TestSystem::start().await;
    let first = system.place("MUG-01", 1).await;
    let second = system.place("MUG-01", 1).await;

    let list: Vec<Value> = system
        .http
        .get(format!("{}/orders?limit=2", system.order_url))
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("json");

    let ids: Vec<&str> = list.iter().map(|o| o["id"].as_str().expect("id")).collect();
    assert_eq!(ids, [second.as_str(), first.as_str()]);
    system.stop().await;
}

#[tokio::test]
async fn each_service_describes_its_api_in_openapi() {
    let system = TestSystem::start().await;
    let document_of = async |base: &str| -> Value {
        system.http.get(format!("{base}/openapi.json")).send().await.expect("answers").json().await.expect("json")
    };
    let (order_doc, inventory_doc) = (document_of(&system.order_url).await, document_of(&system.inventory_url).await);
    for (doc, path) in [(&order_doc, "/orders"), (&order_doc, "/orders/{id}/cancel"), (&inventory_doc, "/stock/{sku}")]
    {
        assert!(doc["paths"].get(path).is_some(), "{path} is documented");
    }
    // The order routes say they need a customer's token, and which kind.
    assert_eq!(order_doc["components"]["securitySchemes"]["customer_token"]["scheme"], "bearer");
    assert!(
        order_doc["paths"]["/orders"]["post"]["security"][0].get("customer_token").is_some(),
        "{}",
        order_doc["paths"]["/orders"]
    );
    system.stop().await;
}

#[tokio::test]
async fn a_method_a_documented_path_does_not_answer_is_a_405_naming_the_ones_it_does() {
    let system = TestSystem::start().await;
    let id = uuid::Uuid::new_v4();
    let (order, inventory) = (&system.order_url, &system.inventory_url);
    for (method, url, allow) in [
        ("DELETE", format!("{order}/orders/{id}"), "GET, HEAD"),
        ("PUT", format!("{order}/orders"), "GET, HEAD, POST"),
        ("GET", format!("{order}/orders/{id}/cancel"), "POST"),
        ("POST", format!("{inventory}/stock/MUG-01"), "GET, HEAD"),
    ] {
        let response = system.http.request(method.parse().expect("method"), &url).send().await.expect("answers");
        assert_eq!(response.status(), 405, "{method} {url}");
        assert_eq!(response.headers().get("allow").and_then(|v| v.to_str().ok()), Some(allow), "{method} {url}");
        let (_, body) = error_of(response).await;
        assert_eq!(body["error"], "method_not_allowed", "{method} {url}");
    }
    // A path nobody documents is still a 404.
    let unknown = system.http.delete(format!("{order}/nothing/{id}")).send().await.expect("answers");
    assert_eq!(unknown.status(), 404);
    system.stop().await;
}
