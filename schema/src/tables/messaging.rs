// @generated automatically by Diesel CLI.

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
        lane_bucket -> Int4,
    }
}

diesel::allow_tables_to_appear_in_same_query!(inbox, outbox,);
