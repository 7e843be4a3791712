//! Stock as the API shows it, and products added by an operator.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use schema::Sku;

use crate::tables::products;
use crate::views::stock;

/// One product as the API shows it.
#[derive(Debug, Clone, Queryable, Selectable, serde::Serialize, utoipa::ToSchema)]
#[diesel(table_name = stock, check_for_backend(diesel::pg::Pg))]
pub struct StockView {
    pub sku: String,
    pub name: String,
    /// What can still be sold: `on_hand − reserved`.
    pub available: i32,
    /// Units in the warehouse.
    pub on_hand: i32,
    /// Units promised to confirmed orders that have not shipped.
    pub reserved: i32,
}

pub async fn list(conn: &mut AsyncPgConnection) -> QueryResult<Vec<StockView>> {
    stock::table.order(stock::sku).select(StockView::as_select()).load(conn).await
}

pub async fn find(conn: &mut AsyncPgConnection, sku: &Sku) -> QueryResult<Option<StockView>> {
    stock::table.find(sku.as_str()).select(StockView::as_select()).first(conn).await.optional()
}

/// Adds a product to the catalogue with `units` in stock; false if the SKU is already there.
/// New stock enters as the product's initial stock and its first level (the migration's trigger
/// appends it): all on hand, nothing reserved, so the books still balance (on hand = initial −
/// shipped, reserved = held, by the ledger).
pub async fn add_product(conn: &mut AsyncPgConnection, sku: &Sku, name: &str, units: i32) -> QueryResult<bool> {
    let inserted = diesel::insert_into(products::table)
        .values((products::sku.eq(sku.as_str()), products::name.eq(name), products::initial_stock.eq(units)))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(inserted == 1)
}
