// @generated automatically by Diesel CLI.

diesel::table! {
    order_lines (order_id, line_no) {
        order_id -> Uuid,
        line_no -> Int4,
        sku -> Text,
        quantity -> Int4,
    }
}

diesel::table! {
    order_status_history (id) {
        id -> Int8,
        order_id -> Uuid,
        status -> Text,
        reason -> Nullable<Text>,
        at -> Timestamptz,
    }
}

diesel::table! {
    orders (id) {
        id -> Uuid,
        customer_id -> Text,
        idempotency_key -> Text,
        request_hash -> Text,
        status -> Text,
        rejection_reason -> Nullable<Text>,
        correlation_id -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        ship_idempotency_key -> Nullable<Text>,
    }
}

diesel::joinable!(order_lines -> orders (order_id));
diesel::joinable!(order_status_history -> orders (order_id));

diesel::allow_tables_to_appear_in_same_query!(order_lines, order_status_history, orders,);
