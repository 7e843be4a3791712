//! Stock as a series of levels (decision 0036).
//!
//! Two movements of one SKU at the same time: each reservation, release and shipment appends
//! the SKU's next level under its product row's lock, so the second waits for the first to
//! commit and then appends after it. Without the lock, the second would read the same newest
//! level, and the key would refuse its append: an error, and a dead letter in a running system.
//!
//! Old levels are forgotten: those older than the retention go, a SKU's newest never does,
//! and the series goes on after it.

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
    levels_of(url, "LOCK-1").await
}

async fn levels_of(url: &str, sku: &str) -> Vec<(i64, i32, i32)> {
    let mut conn = TestSystem::connect(url).await;
    let rows: Vec<Level> =
        diesel::sql_query("SELECT seq, on_hand, reserved FROM stock_levels WHERE sku = $1 ORDER BY seq")
            .bind::<diesel::sql_types::Text, _>(sku)
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

/// Appends levels `seqs` of `sku` (one unit more reserved each), each stamped `days_ago`.
async fn plant_levels(conn: &mut AsyncPgConnection, sku: &str, seqs: std::ops::RangeInclusive<i64>, days_ago: i64) {
    conn.batch_execute(&format!(
        "INSERT INTO stock_levels (sku, seq, on_hand, reserved, created_at) \
         SELECT '{sku}', s, 100, s, now() - interval '{days_ago} days' FROM generate_series({}, {}) s",
        seqs.start(),
        seqs.end()
    ))
    .await
    .expect("levels planted");
}

#[tokio::test]
async fn levels_older_than_the_retention_are_forgotten_but_never_a_skus_newest() {
    let database = inventory_database().await;
    let mut conn = TestSystem::connect(&database.url).await;
    conn.batch_execute(
        "INSERT INTO products (sku, name, initial_stock) VALUES ('OLD-1', 'Old', 100), ('MIXED-1', 'Mixed', 100);
         UPDATE stock_levels SET created_at = now() - interval '30 days' WHERE sku IN ('OLD-1', 'MIXED-1');",
    )
    .await
    .expect("products");
    // OLD-1 moved long ago and not since: every level is old, the newest (12) too.
    plant_levels(&mut conn, "OLD-1", 1..=12, 30).await;
    // MIXED-1: 1–4 old, 5–7 recent, 8 old (a transaction that began long before it appended;
    // its batch is walked, so it goes too), 9 recent and the newest.
    plant_levels(&mut conn, "MIXED-1", 1..=4, 30).await;
    plant_levels(&mut conn, "MIXED-1", 5..=7, 1).await;
    plant_levels(&mut conn, "MIXED-1", 8..=8, 30).await;
    plant_levels(&mut conn, "MIXED-1", 9..=9, 1).await;
    let stock_before = stock::list(&mut conn).await.expect("stock");

    // Kept seven days, five levels a statement: OLD-1 takes three batches.
    let cutoff = chrono::Utc::now() - chrono::Duration::days(7);
    let forgotten = stock::retention::forget(&mut conn, cutoff, 5).await.expect("forgotten");

    assert_eq!(levels_of(&database.url, "OLD-1").await, vec![(12, 100, 12)]);
    let mixed: Vec<i64> = levels_of(&database.url, "MIXED-1").await.into_iter().map(|(seq, ..)| seq).collect();
    assert_eq!(mixed, vec![5, 6, 7, 9]);
    // LOCK-1's only level is recent.
    assert_eq!(levels(&database.url).await, vec![(0, 10, 0)]);
    assert_eq!(forgotten, 12 + 6);
    let stock_after = stock::list(&mut conn).await.expect("stock");
    let summary = |s: &[stock::StockView]| s.iter().map(|p| (p.sku.clone(), p.on_hand, p.reserved)).collect::<Vec<_>>();
    assert_eq!(summary(&stock_after), summary(&stock_before), "the stock is what it was");

    // A second turn finds nothing more, and the series goes on after its newest level.
    assert_eq!(stock::retention::forget(&mut conn, cutoff, 5).await.expect("second turn"), 0);
    let line = Line { sku: Sku::parse("OLD-1").expect("sku"), quantity: Quantity::parse(1).expect("quantity") };
    let order = OrderPlaced { order_id: OrderId::new(), customer_id: "lock-test".to_owned(), lines: vec![line] };
    let trace = test_trace();
    let decided = stock::reserve(&mut conn, EventId::new(), &order, Outbox::new(TOPIC, &trace)).await;
    assert_eq!(decided.expect("reserves"), Reservation::Reserved);
    assert_eq!(levels_of(&database.url, "OLD-1").await, vec![(12, 100, 12), (13, 100, 13)]);
}

#[tokio::test]
async fn a_running_inventory_forgets_levels_older_than_its_retention_and_counts_them() {
    // Kept no time at all, forgotten every second: every level but each SKU's newest goes.
    let levels = inventory::stock::retention::LevelRetention { keep_hours: 0, forget_every_secs: 1, batch: 2 };
    let system = TestSystem::start_with(e2e::Options { levels, ..Default::default() }).await;
    let orders = [system.place("MUG-01", 1).await, system.place("MUG-01", 2).await, system.place("MUG-01", 1).await];
    for id in &orders {
        assert_eq!(system.settled(id).await["status"], "CONFIRMED");
    }
    let metrics = format!("{}/metrics", system.inventory_url);
    e2e::eventually_async("three levels forgotten and counted", || async {
        let text = system.http.get(&metrics).send().await.expect("answers").text().await.expect("text");
        text.lines().any(|l| l.starts_with("stock_levels_forgotten_total ") && !l.ends_with(" 0"))
            && levels_of(&system.inventory_db, "MUG-01").await.len() == 1
    })
    .await;
    let kept: Vec<(i64, i32)> =
        levels_of(&system.inventory_db, "MUG-01").await.into_iter().map(|(seq, _, reserved)| (seq, reserved)).collect();
    assert_eq!(kept, vec![(3, 4)], "the newest level, after three reservations");
    assert_eq!(system.stock_levels("MUG-01").await.2, 4, "reserved as before");
    system.assert_books_balance().await;
    system.stop().await;
}
