//! The inventory database's views, which `diesel print-schema` does not print: written here by
//! hand, as the migration that creates each one defines it.

diesel::table! {
    /// Each product with its stock now: the catalogue row and its SKU's newest level
    /// (migration `2026-12-07-000007_stock_levels`, decision 0036). Read only.
    stock (sku) {
        sku -> Text,
        name -> Text,
        initial_stock -> Int4,
        on_hand -> Int4,
        reserved -> Int4,
        available -> Int4,
    }
}

use crate::tables::products;

diesel::allow_tables_to_appear_in_same_query!(stock, products);
