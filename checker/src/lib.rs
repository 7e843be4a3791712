//! The judge of every fault test and load run.
//!
//! One room, over 300 lines: each check is one query over the same two databases, and the
//! report that names every breach is read with them.
//!
//! It reads the order and inventory databases and checks, from data alone:
//! - every order is settled, or younger than the grace period (no lost order);
//! - per SKU, `on_hand = initial − Σ shipped` and `reserved = Σ held`, both from the ledger
//!   (reserve −q, release +q, ship −q: what an order holds is −(reserve + release) − shipped),
//!   so the ledger explains every unit in the warehouse and every unit promised;
//! - per order and SKU, the ledger matches the order's status: a CONFIRMED order holds
//!   exactly its quantity, a SHIPPED one shipped it, a REJECTED or CANCELLED one holds and
//!   shipped nothing, nothing shipped for an order not shipping, and no ledger row names an
//!   order the order service does not know. With the line above, `reserved = Σ(confirmed, not
//!   shipped, not cancelled)` once nothing is in flight;
//! - from the orders' histories: nothing shipped that was never CONFIRMED, and nothing was
//!   cancelled after its shipping started;
//! - no customer's idempotency key has more than one order;
//! - how much is still waiting in each outbox, and that nothing waits there longer than
//!   [`OUTBOX_STALE_SECS`] (or the grace period, if longer): a relay that stopped publishing.

use std::collections::{BTreeMap, HashMap};

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Double, Integer, Nullable, Text, Uuid as SqlUuid};
use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl as _};
use serde::Serialize;
use uuid::Uuid;

/// Units the ledger rows `l` took out of the warehouse (ship rows are −q).
const LEDGER_SHIPPED: &str = "COALESCE(-sum(l.delta) FILTER (WHERE l.reason = 'ship'), 0)::int8";

/// Units the ledger rows `l` hold for orders and still in the warehouse: reserved (−q) and not
/// released (+q), less what shipped.
const LEDGER_HELD: &str = "(COALESCE(-sum(l.delta) FILTER (WHERE l.reason IN ('reserve', 'release')), 0)::int8 \
                            - COALESCE(-sum(l.delta) FILTER (WHERE l.reason = 'ship'), 0)::int8)";

/// An outbox row older than this (or than the grace period, if longer) means the relay of
/// that outbox is not publishing.
pub const OUTBOX_STALE_SECS: f64 = 60.0;

#[derive(Debug, Serialize)]
pub struct Report {
    pub orders_by_status: BTreeMap<String, i64>,
    /// Orders still PENDING, CANCELLING or SHIPPING after the grace period.
    pub stuck: Vec<StuckOrder>,
    pub skus: Vec<SkuBooks>,
    pub outbox_backlog: BTreeMap<String, Backlog>,
    pub violations: Vec<String>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }

    pub fn orders(&self) -> i64 {
        self.orders_by_status.values().sum()
    }
}

#[derive(Debug, Serialize, QueryableByName)]
pub struct StuckOrder {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = Double)]
    pub age_secs: f64,
}

/// One SKU's stock, and what its ledger says it should be.
#[derive(Debug, Serialize, QueryableByName)]
pub struct SkuBooks {
    #[diesel(sql_type = Text)]
    pub sku: String,
    #[diesel(sql_type = Integer)]
    pub initial: i32,
    #[diesel(sql_type = Integer)]
    pub on_hand: i32,
    #[diesel(sql_type = Integer)]
    pub reserved: i32,
    #[diesel(sql_type = Integer)]
    pub available: i32,
    /// Units the ledger says left the warehouse.
    #[diesel(sql_type = BigInt)]
    pub shipped: i64,
    /// Units the ledger says are promised to orders and still here.
    #[diesel(sql_type = BigInt)]
    pub held: i64,
}

#[derive(Debug, QueryableByName)]
struct Sku {
    #[diesel(sql_type = Text)]
    sku: String,
}

impl SkuBooks {
    fn on_hand_balances(&self) -> bool {
        i64::from(self.on_hand) == i64::from(self.initial) - self.shipped
    }

    fn reserved_balances(&self) -> bool {
        i64::from(self.reserved) == self.held
    }
}

#[derive(Debug, Serialize, QueryableByName)]
pub struct Backlog {
    #[diesel(sql_type = BigInt)]
    pub rows: i64,
    #[diesel(sql_type = Nullable<Double>)]
    pub oldest_age_secs: Option<f64>,
}

#[derive(QueryableByName)]
struct StatusCount {
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = BigInt)]
    count: i64,
}

#[derive(QueryableByName)]
struct OrderSku {
    #[diesel(sql_type = SqlUuid)]
    order_id: Uuid,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Text)]
    sku: String,
    #[diesel(sql_type = BigInt)]
    quantity: i64,
}

/// What the ledger says about one order's SKU: units held for it, units shipped.
#[derive(QueryableByName)]
struct LedgerOrder {
    #[diesel(sql_type = SqlUuid)]
    order_id: Uuid,
    #[diesel(sql_type = Text)]
    sku: String,
    #[diesel(sql_type = BigInt)]
    held: i64,
    #[diesel(sql_type = BigInt)]
    shipped: i64,
}

#[derive(QueryableByName)]
struct OrderId {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
}

#[derive(QueryableByName)]
struct DuplicateKey {
    #[diesel(sql_type = Text)]
    customer_id: String,
    #[diesel(sql_type = Text)]
    idempotency_key: String,
    #[diesel(sql_type = BigInt)]
    orders: i64,
}

/// Checks the books of the two databases. Orders younger than `grace_secs` may still be in
/// flight and are not counted as stuck.
pub async fn check(order_url: &str, inventory_url: &str, grace_secs: f64) -> anyhow::Result<Report> {
    let mut orders = AsyncPgConnection::establish(order_url).await?;
    let mut inventory = AsyncPgConnection::establish(inventory_url).await?;
    // Each database is read in one snapshot, so that counts, stuck orders and ledger agree
    // with each other even while orders are still moving. The order database's snapshot is
    // taken first (its first query comes first): inventory commits a decision before the
    // order service records it, so the inventory snapshot, taken later, holds every decision
    // the order snapshot shows. The connections are dropped at the end; nothing is written.
    for conn in [&mut orders, &mut inventory] {
        diesel::sql_query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").execute(conn).await?;
    }
    let mut violations = Vec::new();

    let orders_by_status: BTreeMap<String, i64> =
        diesel::sql_query("SELECT status, count(*) AS count FROM orders GROUP BY status")
            .load::<StatusCount>(&mut orders)
            .await?
            .into_iter()
            .map(|row| (row.status, row.count))
            .collect();

    let stuck: Vec<StuckOrder> = diesel::sql_query(
        "SELECT id, status, extract(epoch FROM now() - created_at)::float8 AS age_secs FROM orders \
         WHERE status IN ('PENDING', 'CANCELLING', 'SHIPPING') AND created_at < now() - make_interval(secs => $1) \
         ORDER BY created_at",
    )
    .bind::<Double, _>(grace_secs)
    .load(&mut orders)
    .await?;
    for order in &stuck {
        violations.push(format!("order {} is still {} after {:.0}s", order.id, order.status, order.age_secs));
    }

    let skus: Vec<SkuBooks> = diesel::sql_query(format!(
        "SELECT p.sku, p.initial_stock AS initial, p.on_hand, p.reserved, p.available, \
                {LEDGER_SHIPPED} AS shipped, {LEDGER_HELD} AS held \
         FROM stock p LEFT JOIN stock_ledger l ON l.sku = p.sku \
         GROUP BY p.sku, p.initial_stock, p.on_hand, p.reserved, p.available ORDER BY p.sku"
    ))
    .load(&mut inventory)
    .await?;
    // The `stock` view shows a product only with a level: one without would be missing above.
    let without_level: Vec<Sku> = diesel::sql_query(
        "SELECT p.sku FROM products p WHERE NOT EXISTS (SELECT 1 FROM stock_levels s WHERE s.sku = p.sku) ORDER BY p.sku",
    )
    .load(&mut inventory)
    .await?;
    for product in without_level {
        violations.push(format!("{}: the product has no stock level", product.sku));
    }
    for sku in &skus {
        if !sku.on_hand_balances() {
            violations.push(format!(
                "{}: on hand {} != initial {} − shipped {} (ledger)",
                sku.sku, sku.on_hand, sku.initial, sku.shipped
            ));
        }
        if !sku.reserved_balances() {
            violations.push(format!(
                "{}: reserved {} != {} held for confirmed orders not shipped or cancelled (ledger)",
                sku.sku, sku.reserved, sku.held
            ));
        }
    }

    violations.extend(ledger_against_orders(&mut orders, &mut inventory).await?);
    violations.extend(histories(&mut orders).await?);

    let duplicates: Vec<DuplicateKey> = diesel::sql_query(
        "SELECT customer_id, idempotency_key, count(*) AS orders FROM orders \
         GROUP BY customer_id, idempotency_key HAVING count(*) > 1",
    )
    .load(&mut orders)
    .await?;
    for duplicate in duplicates {
        violations.push(format!(
            "customer {:?}'s idempotency key {:?} has {} orders",
            duplicate.customer_id, duplicate.idempotency_key, duplicate.orders
        ));
    }

    let backlog_sql = "SELECT count(*) AS rows, extract(epoch FROM now() - min(created_at))::float8 AS oldest_age_secs FROM outbox_pending";
    let mut outbox_backlog: BTreeMap<String, Backlog> = BTreeMap::new();
    outbox_backlog.insert("order".to_owned(), diesel::sql_query(backlog_sql).get_result(&mut orders).await?);
    outbox_backlog.insert("inventory".to_owned(), diesel::sql_query(backlog_sql).get_result(&mut inventory).await?);
    let stale_after = grace_secs.max(OUTBOX_STALE_SECS);
    for (name, backlog) in &outbox_backlog {
        if let Some(age) = backlog.oldest_age_secs.filter(|age| *age > stale_after) {
            violations.push(format!(
                "outbox {name}: {} rows waiting, the oldest for {age:.0}s (a relay is not publishing)",
                backlog.rows
            ));
        }
    }

    Ok(Report { orders_by_status, stuck, skus, outbox_backlog, violations })
}

/// Compares, per order and SKU, what the ledger holds for the order and shipped for it with
/// what the order's status says.
async fn ledger_against_orders(
    orders: &mut AsyncPgConnection,
    inventory: &mut AsyncPgConnection,
) -> anyhow::Result<Vec<String>> {
    let lines: Vec<OrderSku> = diesel::sql_query(
        "SELECT o.id AS order_id, o.status, l.sku, l.quantity::int8 AS quantity \
         FROM orders o JOIN order_lines l ON l.order_id = o.id",
    )
    .load(orders)
    .await?;
    let mut ledger: HashMap<(Uuid, String), (i64, i64)> = diesel::sql_query(format!(
        "SELECT l.order_id, l.sku, {LEDGER_HELD} AS held, {LEDGER_SHIPPED} AS shipped \
         FROM stock_ledger l GROUP BY l.order_id, l.sku"
    ))
    .load::<LedgerOrder>(inventory)
    .await?
    .into_iter()
    .map(|row| ((row.order_id, row.sku), (row.held, row.shipped)))
    .collect();

    let mut violations = Vec::new();
    for line in lines {
        let (held, shipped) = ledger.remove(&(line.order_id, line.sku.clone())).unwrap_or((0, 0));
        let q = line.quantity;
        let expected: &[(i64, i64)] = match line.status.as_str() {
            "CONFIRMED" => &[(q, 0)],
            "SHIPPED" => &[(0, q)],
            "REJECTED" | "CANCELLED" => &[(0, 0)],
            // In flight: either outcome is still possible, but nothing ships for them.
            "PENDING" | "CANCELLING" => &[(0, 0), (q, 0)],
            "SHIPPING" => &[(q, 0), (0, q)],
            other => anyhow::bail!("order {} has a status the checker does not know: {other}", line.order_id),
        };
        if !expected.contains(&(held, shipped)) {
            let expected: Vec<String> = expected.iter().map(|(h, s)| format!("holds {h}, shipped {s}")).collect();
            violations.push(format!(
                "order {} ({}) {}: ledger holds {held}, shipped {shipped}; expected {}",
                line.order_id,
                line.status,
                line.sku,
                expected.join(" or ")
            ));
        }
    }
    for ((order_id, sku), (held, shipped)) in ledger {
        if held != 0 || shipped != 0 {
            violations.push(format!(
                "ledger holds {held} and shipped {shipped} of {sku} for order {order_id}, which has no such line"
            ));
        }
    }
    Ok(violations)
}

/// What the orders' histories must never show: shipping an order that was never confirmed,
/// and cancelling one whose shipping had started.
async fn histories(orders: &mut AsyncPgConnection) -> anyhow::Result<Vec<String>> {
    let unconfirmed: Vec<OrderId> = diesel::sql_query(
        "SELECT o.id FROM orders o WHERE o.status IN ('SHIPPING', 'SHIPPED') AND NOT EXISTS \
           (SELECT 1 FROM order_status_history h WHERE h.order_id = o.id AND h.status = 'CONFIRMED') \
         ORDER BY o.id",
    )
    .load(orders)
    .await?;
    let cancelled_in_shipping: Vec<OrderId> = diesel::sql_query(
        "SELECT DISTINCT s.order_id AS id FROM order_status_history s \
         JOIN order_status_history c ON c.order_id = s.order_id AND c.id > s.id \
         WHERE s.status = 'SHIPPING' AND c.status IN ('CANCELLING', 'CANCELLED') ORDER BY 1",
    )
    .load(orders)
    .await?;
    Ok(unconfirmed
        .into_iter()
        .map(|o| format!("order {} is shipping or shipped but was never CONFIRMED", o.id))
        .chain(
            cancelled_in_shipping.into_iter().map(|o| format!("order {} was cancelled after shipping started", o.id)),
        )
        .collect())
}

/// The report as text for people.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let statuses: Vec<String> = report.orders_by_status.iter().map(|(s, n)| format!("{s} {n}")).collect();
    out.push_str(&format!("orders: {} ({})\n", report.orders(), statuses.join(", ")));
    out.push_str(&format!("stuck orders: {}\n", report.stuck.len()));
    out.push_str(&format!(
        "stock: {:<12} {:>8} {:>8} {:>8} {:>8} {:>9}  (on hand = initial − shipped; reserved = held, by the ledger)\n",
        "sku", "initial", "shipped", "on hand", "reserved", "available"
    ));
    for sku in &report.skus {
        let ok = sku.on_hand_balances() && sku.reserved_balances();
        out.push_str(&format!(
            "       {:<12} {:>8} {:>8} {:>8} {:>8} {:>9}  {}\n",
            sku.sku,
            sku.initial,
            sku.shipped,
            sku.on_hand,
            sku.reserved,
            sku.available,
            if ok { "ok" } else { "MISMATCH" }
        ));
    }
    for (name, backlog) in &report.outbox_backlog {
        out.push_str(&format!(
            "outbox {name}: {} rows, oldest {:.1}s\n",
            backlog.rows,
            backlog.oldest_age_secs.unwrap_or(0.0)
        ));
    }
    if report.violations.is_empty() {
        out.push_str("violations: none\n");
    } else {
        out.push_str(&format!("violations: {}\n", report.violations.len()));
        for violation in &report.violations {
            out.push_str(&format!("  - {violation}\n"));
        }
    }
    out
}
