//! Two movements of one SKU at the same time (decision 0036). Each reservation, release and
//! shipment appends the SKU's next level under its product row's lock, so the second waits for
//! the first to commit and then appends after it. Without the lock, the second would read the
//! same newest level, and the key would refuse its append: an error, and a dead letter in a
//! running system.

use std::time::Duration;

use diesel::sql_types::{BigInt, Integer};
use diesel_async::{AsyncPgConnection, RunQueryDsl as _, SimpleAsyncConnection as _};
use e2e::{TestDatabase, TestSystem};
use inventory::stock::{self, Reservation};
use messaging::outbox::Outbox;
use schema::envelope::Trace;
use schema::events::{Line, OrderCancelled, OrderPlaced, OrderReadyToShip};
use schema::{EventId, OrderId, Quantity, Sku};

const TOPIC: &str = "inventory.events";

/// A migrated inventory database with one product, LOCK-1, of 10 units.
async fn inventory_database() -> TestDatabase {
    let name = e2e::unique_name("sl");
    let database = TestDatabase::create(&e2e::pg_server_url(), &format!("{name}_inventory")).await;
    platform::db::run_migrations(
        &database.url,
        messaging::service::migrations::<inventory::startup::InventoryService>(),
    )
    .await
    .expect("migrations");
    let mut conn = TestSystem::connect(&database.url).await;
    conn.batch_execute("INSERT INTO products (sku, name, initial_stock) VALUES ('LOCK-1', 'Locked', 10)")
        .await
        .expect("product");
    database
}

fn test_trace() -> Trace {
    Trace { correlation_id: "lock-test".to_owned(), traceparent: None }
}

/// A connection with a transaction open.
async fn in_transaction(url: &str) -> AsyncPgConnection {
    let mut conn = TestSystem::connect(url).await;
    conn.batch_execute("BEGIN").await.expect("begin");
    conn
}

fn placed(units: i64) -> OrderPlaced {
    let line = Line { sku: Sku::parse("LOCK-1").expect("sku"), quantity: Quantity::parse(units).expect("quantity") };
    OrderPlaced { order_id: OrderId::new(), customer_id: "lock-test".to_owned(), lines: vec![line] }
}

#[derive(diesel::QueryableByName, Debug, PartialEq, Eq)]
struct Level {
    #[diesel(sql_type = BigInt)]
    seq: i64,
    #[diesel(sql_type = Integer)]
    on_hand: i32,
    #[diesel(sql_type = Integer)]
    reserved: i32,
}

async fn levels(url: &str) -> Vec<(i64, i32, i32)> {
    let mut conn = TestSystem::connect(url).await;
    let rows: Vec<Level> =
        diesel::sql_query("SELECT seq, on_hand, reserved FROM stock_levels WHERE sku = 'LOCK-1' ORDER BY seq")
            .load(&mut conn)
            .await
            .expect("levels");
    rows.into_iter().map(|l| (l.seq, l.on_hand, l.reserved)).collect()
}

/// Runs `second` while `first` holds its transaction open: `second` must still be waiting
/// after a while, and must finish once `first` commits.
async fn second_waits_for_first<F>(mut first: AsyncPgConnection, second: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let second = tokio::spawn(second);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!second.is_finished(), "the second movement did not wait for the first one's lock");
    first.batch_execute("COMMIT").await.expect("first commits");
    tokio::time::timeout(Duration::from_secs(10), second).await.expect("the second finishes").expect("no panic");
}

#[tokio::test]
async fn a_second_reservation_of_a_sku_waits_for_the_first_and_appends_after_it() {
    let database = inventory_database().await;
    let trace = test_trace();

    let mut first = in_transaction(&database.url).await;
    let decided = stock::reserve(&mut first, EventId::new(), &placed(2), Outbox::new(TOPIC, &trace)).await;
    assert_eq!(decided.expect("first reserves"), Reservation::Reserved);

    let url = database.url.clone();
    second_waits_for_first(first, async move {
        let trace = test_trace();
        let mut second = in_transaction(&url).await;
        let decided = stock::reserve(&mut second, EventId::new(), &placed(3), Outbox::new(TOPIC, &trace)).await;
        assert_eq!(decided.expect("second reserves after the first"), Reservation::Reserved);
        second.batch_execute("COMMIT").await.expect("second commits");
    })
    .await;

    assert_eq!(levels(&database.url).await, vec![(0, 10, 0), (1, 10, 2), (2, 10, 5)]);
}

#[tokio::test]
async fn a_release_and_a_shipment_wait_for_a_reservation_of_the_same_sku() {
    let database = inventory_database().await;
    let trace = test_trace();
    // Two orders reserved and committed: one to cancel, one to ship.
    let (to_cancel, to_ship) = (placed(1), placed(2));
    for order in [&to_cancel, &to_ship] {
        let mut conn = in_transaction(&database.url).await;
        stock::reserve(&mut conn, EventId::new(), order, Outbox::new(TOPIC, &trace)).await.expect("reserved");
        conn.batch_execute("COMMIT").await.expect("commit");
    }

    for (what, step) in [("release", 0), ("ship", 1)] {
        let mut first = in_transaction(&database.url).await;
        stock::reserve(&mut first, EventId::new(), &placed(1), Outbox::new(TOPIC, &trace)).await.expect("reserved");
        let url = database.url.clone();
        let (cancelled, ready) =
            (OrderCancelled { order_id: to_cancel.order_id }, OrderReadyToShip { order_id: to_ship.order_id });
        second_waits_for_first(first, async move {
            let trace = test_trace();
            let mut second = in_transaction(&url).await;
            let out = Outbox::new(TOPIC, &trace);
            let moved = match step {
                0 => stock::release(&mut second, EventId::new(), &cancelled, out).await.map(|lines| lines.len()),
                _ => stock::ship(&mut second, EventId::new(), &ready, out)
                    .await
                    .map(|lines| lines.map_or(0, |l| l.len())),
            };
            assert_eq!(
                moved.unwrap_or_else(|e| panic!("{what} after the reservation: {e}")),
                1,
                "{what} moved its line"
            );
            second.batch_execute("COMMIT").await.expect("second commits");
        })
        .await;
    }

    // 0: 10/0; reserved 1, 2 → 10/3; reserve 1 → 10/4; release 1 → 10/3; reserve 1 → 10/4;
    // ship 2 → 8/2.
    let last = levels(&database.url).await.pop().expect("levels");
    assert_eq!(last, (6, 8, 2));
}
