// @generated automatically by Diesel CLI.

diesel::table! {
    products (sku) {
        sku -> Text,
        name -> Text,
        initial_stock -> Int4,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    reservations (order_id) {
        order_id -> Uuid,
        status -> Text,
        reason -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    stock_ledger (id) {
        id -> Int8,
        order_id -> Uuid,
        sku -> Text,
        delta -> Int4,
        reason -> Text,
        event_id -> Uuid,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    stock_levels (sku, seq) {
        sku -> Text,
        seq -> Int8,
        on_hand -> Int4,
        reserved -> Int4,
        created_at -> Timestamptz,
    }
}

diesel::joinable!(stock_ledger -> products (sku));
diesel::joinable!(stock_levels -> products (sku));

diesel::allow_tables_to_appear_in_same_query!(products, reservations, stock_ledger, stock_levels,);
