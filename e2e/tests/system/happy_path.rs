use e2e::TestSystem;

#[tokio::test]
async fn an_order_for_a_seeded_sku_is_confirmed_and_the_stock_is_deducted() {
    let system = TestSystem::start().await;
    let before = system.stock("MUG-01").await;

    let id = system.place("MUG-01", 3).await;
    let order = system.settled(&id).await;

    assert_eq!(order["status"], "CONFIRMED");
    let history: Vec<&str> =
        order["history"].as_array().expect("history").iter().map(|h| h["status"].as_str().expect("status")).collect();
    assert_eq!(history, ["PENDING", "CONFIRMED"]);
    assert_eq!(system.stock("MUG-01").await, before - 3);
    system.assert_books_balance().await;
    system.stop().await;
}

#[tokio::test]
async fn an_order_larger_than_the_stock_is_rejected_with_a_readable_reason_and_stock_is_unchanged() {
    let system = TestSystem::start().await;
    let before = system.stock("POSTER-01").await;

    let id = system.place("POSTER-01", before + 1).await;
    let order = system.settled(&id).await;

    assert_eq!(order["status"], "REJECTED");
    let expected = format!("POSTER-01: asked for {}, only {before} left", before + 1);
    assert_eq!(order["rejection_reason"], expected.as_str());
    assert_eq!(order["history"][1]["reason"], expected.as_str());
    assert_eq!(system.stock("POSTER-01").await, before);
    system.assert_books_balance().await;
    system.stop().await;
}

#[tokio::test]
async fn an_order_for_an_unknown_sku_is_rejected_and_nothing_is_deducted() {
    let system = TestSystem::start().await;
    let body = serde_json::json!({"lines": [{"sku": "MUG-01", "quantity": 1}, {"sku": "NOPE-404", "quantity": 1}]});
    let response = system.post_order("unknown-sku", &body).await;
    let id = response.json::<serde_json::Value>().await.expect("json")["id"].as_str().expect("id").to_owned();

    let order = system.settled(&id).await;

    assert_eq!(order["status"], "REJECTED");
    assert_eq!(order["rejection_reason"], "NOPE-404: unknown SKU");
    system.assert_books_balance().await;
    system.stop().await;
}

#[tokio::test]
async fn cancelling_a_confirmed_order_restores_the_stock_exactly() {
    let system = TestSystem::start().await;
    let before = system.stock("LAMP-01").await;
    let id = system.place("LAMP-01", 7).await;
    assert_eq!(system.settled(&id).await["status"], "CONFIRMED");
    assert_eq!(system.stock("LAMP-01").await, before - 7);

    let response = system.cancel(&id).await;
    assert_eq!(response.status(), 202);
    let order = system.settled(&id).await;

    assert_eq!(order["status"], "CANCELLED");
    let history: Vec<&str> =
        order["history"].as_array().expect("history").iter().map(|h| h["status"].as_str().expect("status")).collect();
    assert_eq!(history, ["PENDING", "CONFIRMED", "CANCELLING", "CANCELLED"]);
    assert_eq!(system.stock("LAMP-01").await, before);
    system.assert_books_balance().await;

    let again = system.cancel(&id).await;
    assert_eq!(again.status(), 409);
    let body: serde_json::Value = again.json().await.expect("json");
    assert_eq!(body["message"], "the order is already cancelled");
    system.stop().await;
}

#[tokio::test]
async fn cancelling_a_rejected_order_is_a_conflict_that_says_why() {
    let system = TestSystem::start().await;
    let id = system.place("POSTER-01", 1000).await;
    assert_eq!(system.settled(&id).await["status"], "REJECTED");

    let response = system.cancel(&id).await;

    assert_eq!(response.status(), 409);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["message"], "the order was rejected; there is nothing to cancel");
    system.stop().await;
}

#[tokio::test]
async fn a_pending_order_can_be_cancelled_and_ends_cancelled_with_its_stock_released() {
    let system = TestSystem::start().await;
    let before = system.stock("MOUSE-01").await;
    let id = system.place("MOUSE-01", 2).await;
    // Cancel at once: usually before inventory has decided.
    let response = system.cancel(&id).await;
    assert_eq!(response.status(), 202);

    let order = system.settled(&id).await;

    assert_eq!(order["status"], "CANCELLED");
    assert_eq!(system.stock("MOUSE-01").await, before);
    system.assert_books_balance().await;
    system.stop().await;
}
