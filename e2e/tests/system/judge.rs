//! The judge is judged: the invariant checker decides every test and drill, so each kind of
//! fault is planted here in fresh, migrated databases, and the checker must report exactly
//! that fault — and nothing on books that balance.

use diesel_async::RunQueryDsl as _;
use e2e::{TestDatabase, TestSystem};
use uuid::Uuid;

/// A fresh pair of databases with every migration applied and one product, JUDGE-1, with 10
/// units; orders planted here are an hour old, well past any grace period.
struct Books {
    orders: TestDatabase,
    inventory: TestDatabase,
}

impl Books {
    async fn fresh() -> Self {
        let name = e2e::unique_name("j");
        let [orders, inventory] = TestDatabase::pair(&name).await;
        platform::db::run_migrations(&orders.url, messaging::service::migrations::<order::startup::OrderService>())
            .await
            .expect("order migrations");
        platform::db::run_migrations(
            &inventory.url,
            messaging::service::migrations::<inventory::startup::InventoryService>(),
        )
        .await
        .expect("migrations");
        let books = Self { orders, inventory };
        books.inventory_sql("INSERT INTO products (sku, name, initial_stock) VALUES ('JUDGE-1', 'Judged', 10)").await;
        books
    }

    async fn orders_sql(&self, sql: &str) {
        let mut conn = TestSystem::connect(&self.orders.url).await;
        diesel::sql_query(sql).execute(&mut conn).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    async fn inventory_sql(&self, sql: &str) {
        let mut conn = TestSystem::connect(&self.inventory.url).await;
        diesel::sql_query(sql).execute(&mut conn).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// An order for `quantity` JUDGE-1 in `status`, under idempotency key `key`, with the
    /// history the order service would have written on the way there.
    async fn order(&self, key: &str, status: &str, quantity: i32) -> Uuid {
        let path: &[&str] = match status {
            "PENDING" => &["PENDING"],
            "CONFIRMED" | "REJECTED" => &["PENDING", status],
            "CANCELLED" => &["PENDING", "CONFIRMED", "CANCELLING", "CANCELLED"],
            "SHIPPED" => &["PENDING", "CONFIRMED", "SHIPPING", "SHIPPED"],
            other => panic!("no path to {other}"),
        };
        self.order_with_history(key, path, quantity).await
    }

    /// An order whose history is `path` (its status is the last one).
    async fn order_with_history(&self, key: &str, path: &[&str], quantity: i32) -> Uuid {
        let id = Uuid::now_v7();
        let status = path.last().expect("a path");
        self.orders_sql(&format!(
            "INSERT INTO orders (id, customer_id, idempotency_key, request_hash, status, correlation_id, created_at) \
             VALUES ('{id}', 'judge', '{key}', 'h', '{status}', 'c', now() - interval '1 hour')"
        ))
        .await;
        self.orders_sql(&format!(
            "INSERT INTO order_lines (order_id, line_no, sku, quantity) VALUES ('{id}', 1, 'JUDGE-1', {quantity})"
        ))
        .await;
        for status in path {
            self.orders_sql(&format!(
                "INSERT INTO order_status_history (order_id, status) VALUES ('{id}', '{status}')"
            ))
            .await;
        }
        id
    }

    /// A stock change of `delta` JUDGE-1 for `order`, in the ledger and in the stock levels
    /// alike, as inventory makes it: a reservation (−q) or release (+q) moves `reserved`, a
    /// shipment (−q) takes the units out of `reserved` and `on_hand`.
    async fn deduct(&self, order: Uuid, delta: i32, reason: &str) {
        self.inventory_sql(&format!(
            "INSERT INTO stock_ledger (order_id, sku, delta, reason, event_id) \
             VALUES ('{order}', 'JUDGE-1', {delta}, '{reason}', '{}')",
            Uuid::now_v7()
        ))
        .await;
        match reason {
            "reserve" | "release" => self.level(0, -delta).await,
            "ship" => self.level(delta, delta).await,
            other => panic!("no such ledger reason {other}"),
        }
    }

    /// Appends JUDGE-1's next stock level: the newest one's `on_hand` and `reserved` changed by
    /// these amounts.
    async fn level(&self, on_hand: i32, reserved: i32) {
        self.inventory_sql(&format!(
            "INSERT INTO stock_levels (sku, seq, on_hand, reserved) \
             SELECT sku, seq + 1, on_hand + {on_hand}, reserved + {reserved} FROM stock_levels \
             WHERE sku = 'JUDGE-1' ORDER BY seq DESC LIMIT 1"
        ))
        .await;
    }

    /// What the checker says, with the default grace of the command line (30 s).
    async fn violations(&self) -> Vec<String> {
        checker::check(&self.orders.url, &self.inventory.url, 30.0).await.expect("checker runs").violations
    }

    /// The `check-invariants` command's exit code on these books.
    fn exit_code(&self) -> Option<i32> {
        std::process::Command::new(e2e::processes::binary("check-invariants"))
            .args(["--order-db", &self.orders.url, "--inventory-db", &self.inventory.url])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("check-invariants runs")
            .code()
    }

    /// Books that balance: a confirmed order reserved once, a rejected one never, a
    /// cancelled one reserved and released, a shipped one reserved and shipped.
    async fn balanced() -> Self {
        let books = Self::fresh().await;
        let confirmed = books.order("confirmed", "CONFIRMED", 2).await;
        books.deduct(confirmed, -2, "reserve").await;
        books.order("rejected", "REJECTED", 50).await;
        let cancelled = books.order("cancelled", "CANCELLED", 3).await;
        books.deduct(cancelled, -3, "reserve").await;
        books.deduct(cancelled, 3, "release").await;
        let shipped = books.order("shipped", "SHIPPED", 1).await;
        books.deduct(shipped, -1, "reserve").await;
        books.deduct(shipped, -1, "ship").await;
        books
    }
}

/// Exactly one violation, containing `expected`.
fn assert_only(violations: &[String], expected: &str) {
    assert!(
        violations.len() == 1 && violations[0].contains(expected),
        "expected one violation about {expected:?}, got {violations:#?}"
    );
}

#[tokio::test]
async fn balanced_books_pass_with_a_zero_exit() {
    let books = Books::balanced().await;
    assert_eq!(books.violations().await, Vec::<String>::new());
    assert_eq!(books.exit_code(), Some(0));
}

#[tokio::test]
async fn a_lost_order_is_reported_as_stuck() {
    let books = Books::balanced().await;
    let lost = books.order("lost", "PENDING", 1).await;
    assert_only(&books.violations().await, &format!("order {lost} is still PENDING"));
    assert_eq!(books.exit_code(), Some(1));
}

#[tokio::test]
async fn a_double_deduction_is_reported_even_when_the_stock_adds_up() {
    let books = Books::balanced().await;
    let twice = books.order("twice", "CONFIRMED", 1).await;
    books.deduct(twice, -1, "reserve").await;
    // The ledger's own guard would refuse the second row; plant it past the guard.
    books.inventory_sql("ALTER TABLE stock_ledger DROP CONSTRAINT stock_ledger_order_id_sku_reason_key").await;
    books.deduct(twice, -1, "reserve").await;
    assert_only(
        &books.violations().await,
        &format!("order {twice} (CONFIRMED) JUDGE-1: ledger holds 2, shipped 0; expected holds 1, shipped 0"),
    );
    assert_eq!(books.exit_code(), Some(1));
}

#[tokio::test]
async fn a_deduction_without_a_confirmed_order_is_reported() {
    let books = Books::balanced().await;
    let rejected = books.order("rejected-but-deducted", "REJECTED", 4).await;
    books.deduct(rejected, -4, "reserve").await;
    assert_only(
        &books.violations().await,
        &format!("order {rejected} (REJECTED) JUDGE-1: ledger holds 4, shipped 0; expected holds 0, shipped 0"),
    );

    let books = Books::balanced().await;
    let unknown = Uuid::now_v7();
    books.deduct(unknown, -1, "reserve").await;
    assert_only(&books.violations().await, &format!("of JUDGE-1 for order {unknown}, which has no such line"));
}

#[tokio::test]
async fn a_confirmed_order_without_a_deduction_is_reported() {
    let books = Books::balanced().await;
    let free = books.order("free", "CONFIRMED", 2).await;
    assert_only(
        &books.violations().await,
        &format!("order {free} (CONFIRMED) JUDGE-1: ledger holds 0, shipped 0; expected holds 2, shipped 0"),
    );
}

#[tokio::test]
async fn stock_that_left_the_warehouse_outside_the_ledger_is_reported() {
    let books = Books::balanced().await;
    books.level(-1, 0).await;
    assert_only(&books.violations().await, "JUDGE-1: on hand 8 != initial 10 − shipped 1 (ledger)");
}

#[tokio::test]
async fn a_reservation_outside_the_ledger_is_reported() {
    let books = Books::balanced().await;
    books.level(0, 1).await;
    assert_only(
        &books.violations().await,
        "JUDGE-1: reserved 3 != 2 held for confirmed orders not shipped or cancelled (ledger)",
    );
}

#[tokio::test]
async fn a_product_without_a_stock_level_is_reported() {
    let books = Books::balanced().await;
    books.inventory_sql("DELETE FROM stock_levels WHERE sku = 'JUDGE-1'").await;
    assert_only(&books.violations().await, "JUDGE-1: the product has no stock level");
}

#[tokio::test]
async fn a_shipped_order_without_a_shipment_is_reported() {
    let books = Books::balanced().await;
    let unshipped = books.order("unshipped", "SHIPPED", 2).await;
    books.deduct(unshipped, -2, "reserve").await;
    assert_only(
        &books.violations().await,
        &format!("order {unshipped} (SHIPPED) JUDGE-1: ledger holds 2, shipped 0; expected holds 0, shipped 2"),
    );
}

#[tokio::test]
async fn a_shipment_without_a_confirmation_is_reported() {
    // From the ledger: stock shipped for an order still pending.
    let books = Books::balanced().await;
    let pending = books.order_with_history("early", &["PENDING"], 1).await;
    books.orders_sql(&format!("UPDATE orders SET created_at = now() WHERE id = '{pending}'")).await;
    books.deduct(pending, -1, "reserve").await;
    books.deduct(pending, -1, "ship").await;
    assert_only(
        &books.violations().await,
        &format!(
            "order {pending} (PENDING) JUDGE-1: ledger holds 0, shipped 1; expected holds 0, shipped 0 or holds 1"
        ),
    );
    // From the history: shipped, the books balance, but it was never confirmed.
    let books = Books::balanced().await;
    let skipped = books.order_with_history("skipped", &["PENDING", "SHIPPING", "SHIPPED"], 1).await;
    books.deduct(skipped, -1, "reserve").await;
    books.deduct(skipped, -1, "ship").await;
    assert_only(&books.violations().await, &format!("order {skipped} is shipping or shipped but was never CONFIRMED"));
    assert_eq!(books.exit_code(), Some(1));
}

#[tokio::test]
async fn a_cancellation_after_shipping_started_is_reported() {
    let books = Books::balanced().await;
    let late =
        books.order_with_history("late", &["PENDING", "CONFIRMED", "SHIPPING", "CANCELLING", "CANCELLED"], 2).await;
    books.deduct(late, -2, "reserve").await;
    books.deduct(late, 2, "release").await;
    assert_only(&books.violations().await, &format!("order {late} was cancelled after shipping started"));
}

#[tokio::test]
async fn two_orders_under_one_idempotency_key_are_reported() {
    let books = Books::balanced().await;
    books.orders_sql("DROP INDEX orders_customer_idempotency_key").await;
    books.order("confirmed", "REJECTED", 1).await;
    assert_only(&books.violations().await, "customer \"judge\"'s idempotency key \"confirmed\" has 2 orders");
}

#[tokio::test]
async fn an_outbox_that_nobody_publishes_is_reported() {
    let books = Books::balanced().await;
    books
        .orders_sql(&format!(
            "INSERT INTO outbox_log (event_id, topic, message_key, event_type, correlation_id, envelope, created_at) \
             VALUES ('{}', 'orders.events', 'k', 'OrderPlaced', 'c', '{{}}', now() - interval '5 minutes')",
            Uuid::now_v7()
        ))
        .await;
    assert_only(&books.violations().await, "outbox order: 1 rows waiting");
    assert_eq!(books.exit_code(), Some(1));
}
