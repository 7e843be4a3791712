//! Diesel definitions of both databases' tables, kept in step with `migrations/` (checked
//! by `scripts/check-schema` against `diesel print-schema`).

/// Tables both databases have: the transactional outbox and the consumer inbox.
pub mod messaging {
    diesel::table! {
        outbox (id) {
            id -> Int8,
            event_id -> Uuid,
            topic -> Text,
            message_key -> Text,
            event_type -> Text,
            correlation_id -> Text,
            traceparent -> Nullable<Text>,
            envelope -> Jsonb,
            created_at -> Timestamptz,
        }
    }

    diesel::table! {
        inbox (event_id) {
            event_id -> Uuid,
            event_type -> Text,
            topic -> Text,
            kafka_partition -> Int4,
            kafka_offset -> Int8,
            received_at -> Timestamptz,
        }
    }
}

/// The order service's database.
pub mod order_db {
    pub use super::messaging::{inbox, outbox};

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
        }
    }

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

    diesel::joinable!(order_lines -> orders (order_id));
    diesel::joinable!(order_status_history -> orders (order_id));
    diesel::allow_tables_to_appear_in_same_query!(orders, order_lines, order_status_history);
}

/// The inventory service's database.
pub mod inventory_db {
    pub use super::messaging::{inbox, outbox};

    diesel::table! {
        products (sku) {
            sku -> Text,
            name -> Text,
            initial_stock -> Int4,
            available -> Int4,
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

    diesel::joinable!(stock_ledger -> products (sku));
    diesel::allow_tables_to_appear_in_same_query!(products, reservations, stock_ledger);
}
