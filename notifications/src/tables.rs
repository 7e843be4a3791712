// @generated automatically by Diesel CLI.

diesel::table! {
    customer_orders (order_id) {
        order_id -> Uuid,
        customer_id -> Text,
        placed_at -> Timestamptz,
    }
}

diesel::table! {
    notifications (id) {
        id -> Uuid,
        order_id -> Uuid,
        kind -> Text,
        detail -> Nullable<Text>,
        message_id -> Text,
        created_at -> Timestamptz,
        attempts -> Int4,
        next_attempt_at -> Timestamptz,
        last_error -> Nullable<Text>,
        recipient -> Nullable<Text>,
        sent_at -> Nullable<Timestamptz>,
        failed_at -> Nullable<Timestamptz>,
    }
}

diesel::allow_tables_to_appear_in_same_query!(customer_orders, notifications,);
