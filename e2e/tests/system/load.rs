use std::collections::BTreeMap;

use e2e::TestSystem;
use futures::StreamExt as _;
use serde_json::{Value, json};

const SKUS: [&str; 5] = ["KEYBOARD-01", "MOUSE-01", "MUG-01", "LAMP-01", "CABLE-01"];
const STOCK: i64 = 60;

#[tokio::test]
async fn two_hundred_concurrent_orders_over_five_skus_conserve_stock_and_all_settle() {
    let system = TestSystem::start().await;
    // Scarce stock, so that some orders are rejected and the race for the last units is real.
    system.restart_stock(None, STOCK as i32).await;
    let places = system.product_row_places().await;

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
    // Stock moved 200 times over five rows, and not one of them was rewritten: the levels are
    // appended (decision 0036), so a held snapshot leaves no versions for a movement to walk.
    assert_eq!(system.product_row_places().await, places, "a stock movement rewrote a product row");
    system.stop().await;
}

/// A flash sale: many shoppers at once for the last units of one SKU, some of them with a
/// second line of a SKU that has plenty. Exactly the stock is sold; every other order is
/// rejected saying the SKU is sold out, and keeps nothing of its other line.
#[tokio::test]
async fn a_flash_sale_sells_exactly_the_stock_and_tells_everyone_else_it_is_gone() {
    const UNITS: i64 = 25;
    const ORDERS: usize = 120;
    let system = TestSystem::start().await;
    system.restart_stock(Some("MUG-01"), UNITS as i32).await;
    let lamps_before = system.stock("LAMP-01").await;

    let orders: Vec<(String, bool)> = futures::stream::iter(0..ORDERS)
        .map(|i| {
            let system = &system;
            async move {
                let with_lamp = i % 4 == 0;
                let mut lines = vec![json!({"sku": "MUG-01", "quantity": 1})];
                if with_lamp {
                    lines.push(json!({"sku": "LAMP-01", "quantity": 1}));
                }
                let response = system.post_order(&format!("flash-{i}"), &json!({ "lines": lines })).await;
                assert!(matches!(response.status().as_u16(), 201 | 202), "{}", response.status());
                let id = response.json::<Value>().await.expect("json")["id"].as_str().expect("id").to_owned();
                (id, with_lamp)
            }
        })
        .buffer_unordered(60)
        .collect()
        .await;

    let (mut mugs_sold, mut lamps_sold, mut rejected) = (0, 0, 0);
    for (id, with_lamp) in &orders {
        let order = system.settled(id).await;
        match order["status"].as_str() {
            Some("CONFIRMED") => {
                mugs_sold += 1;
                lamps_sold += i64::from(*with_lamp);
            }
            Some("REJECTED") => {
                rejected += 1;
                let reason = order["rejection_reason"].as_str().unwrap_or_default();
                assert!(reason.contains("MUG-01: asked for 1, only 0 left"), "order {id}: {reason}");
            }
            other => panic!("order {id} ended {other:?}"),
        }
    }
    assert_eq!(mugs_sold, UNITS, "exactly the stock is sold ({rejected} rejected)");
    assert_eq!(system.stock_levels("MUG-01").await, (0, UNITS, UNITS));
    assert_eq!(system.stock("LAMP-01").await, lamps_before - lamps_sold, "a rejected order keeps no lamp");
    system.assert_books_balance().await;
    system.stop().await;
}
