//! An order's status change is a HOT update: its new version stays in the row's page and no
//! index of `orders` gets an entry for it (order migration 000014). An index that depends on
//! `status` (in its columns or its predicate), or pages filled to the brim, would make every
//! status change write into every index of the table, which a held snapshot then keeps.

use diesel_async::SimpleAsyncConnection as _;
use e2e::databases::count;
use e2e::{TestDatabase, TestSystem};
use messaging::service::ConsumingService as _;

#[tokio::test]
async fn a_status_change_rewrites_the_order_in_its_page_and_no_index() {
    let name = e2e::unique_name("h");
    let database = TestDatabase::create(&e2e::pg_server_url(), &format!("{name}_orders")).await;
    platform::db::run_migrations(&database.url, vec![messaging::MIGRATIONS, order::startup::OrderService::MIGRATIONS])
        .await
        .expect("migrations");
    let mut conn = TestSystem::connect(&database.url).await;
    // A page's worth of orders and more, placed as the service places them: one insert each.
    for n in 0..200 {
        conn.batch_execute(&format!(
            "INSERT INTO orders (id, customer_id, idempotency_key, request_hash, status, correlation_id)
             VALUES (gen_random_uuid(), 'customer-{}', 'key-{n}', 'hash', 'PENDING', 'c-{n}')",
            n % 7
        ))
        .await
        .expect("placed");
    }
    // Each status change in a transaction of its own, as the consumer makes them: every tenth
    // order, so that each page holds its new versions in the room the fill factor left, even
    // with no pruning (a transaction held open anywhere on the server, as other tests do,
    // keeps the old versions).
    for n in (0..200).step_by(10) {
        conn.batch_execute(&format!(
            "UPDATE orders SET status = 'CONFIRMED', updated_at = now() WHERE idempotency_key = 'key-{n}'"
        ))
        .await
        .expect("confirmed");
    }
    conn.batch_execute("SELECT pg_stat_force_next_flush()").await.expect("flushed");
    let all = count(&mut conn, "SELECT n_tup_upd AS count FROM pg_stat_user_tables WHERE relname = 'orders'").await;
    let hot = count(&mut conn, "SELECT n_tup_hot_upd AS count FROM pg_stat_user_tables WHERE relname = 'orders'").await;
    assert_eq!(all, 20);
    assert_eq!(hot, all, "status changes that were not HOT updates: {}", all - hot);
}
