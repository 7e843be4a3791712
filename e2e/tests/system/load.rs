use std::collections::BTreeMap;

use diesel_async::RunQueryDsl as _;
use e2e::TestSystem;
use futures::StreamExt as _;
use serde_json::{Value, json};

const SKUS: [&str; 5] = ["KEYBOARD-01", "MOUSE-01", "MUG-01", "LAMP-01", "CABLE-01"];
const STOCK: i64 = 60;

#[tokio::test]
async fn two_hundred_concurrent_orders_over_five_skus_conserve_stock_and_all_settle() {
    let system = TestSystem::start().await;
    // Scarce stock, so that some orders are rejected and the race for the last units is real.
    let mut conn = TestSystem::connect(&system.inventory_db).await;
    diesel::sql_query(format!("UPDATE products SET initial_stock = {STOCK}, on_hand = {STOCK}, reserved = 0"))
        .execute(&mut conn)
        .await
        .expect("stock set");

    let orders: Vec<(String, i64)> = futures::stream::iter(0..200)
        .map(|i| {
            let system = &system;
            async move {
                let (sku, quantity) = (SKUS[i % 5], (i % 3) as i64 + 1);
                let body = json!({"lines": [{"sku": sku, "quantity": quantity}]});
                let response = system.post_order(&format!("load-{i}"), &body).await;
                assert!(matches!(response.status().as_u16(), 201 | 202), "{}", response.status());
                (response.json::<Value>().await.expect("json")["id"].as_str().expect("id").to_owned(), i as i64)
            }
        })
        .buffer_unordered(50)
        .collect()
        .await;

    let mut confirmed: BTreeMap<&str, i64> = BTreeMap::new();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for (id, i) in &orders {
        let order = system.settled(id).await;
        let status = order["status"].as_str().expect("status").to_owned();
        if status == "CONFIRMED" {
            *confirmed.entry(SKUS[(*i % 5) as usize]).or_default() += i % 3 + 1;
        }
        *outcomes.entry(status).or_default() += 1;
    }

    assert_eq!(outcomes.values().sum::<usize>(), 200, "{outcomes:?}");
    assert!(outcomes.contains_key("CONFIRMED") && outcomes.contains_key("REJECTED"), "{outcomes:?}");
    for sku in SKUS {
        let sold = confirmed.get(sku).copied().unwrap_or(0);
        assert_eq!(system.stock(sku).await, STOCK - sold, "{sku}: initial − Σ confirmed = available");
    }
    system.assert_books_balance().await;
    system.stop().await;
}
