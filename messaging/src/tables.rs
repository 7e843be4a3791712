// @generated automatically by Diesel CLI.

pub mod sql_types {
    #[derive(diesel::sql_types::SqlType)]
    #[diesel(postgres_type(name = "pg_snapshot", schema = "pg_catalog"))]
    pub struct PgSnapshot;

    #[derive(diesel::sql_types::SqlType)]
    #[diesel(postgres_type(name = "xid8", schema = "pg_catalog"))]
    pub struct Xid8;
}

diesel::table! {
    inbox_log (event_id, slot) {
        event_id -> Uuid,
        slot -> Int2,
        event_type -> Text,
        topic -> Text,
        kafka_partition -> Int4,
        kafka_offset -> Int8,
        received_at -> Timestamptz,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use super::sql_types::PgSnapshot;

    outbox_lanes (lane) {
        lane -> Int2,
        owner -> Nullable<Int8>,
        epoch -> Int8,
        lease_until -> Timestamptz,
        done -> PgSnapshot,
        floor_id -> Int8,
        window_end -> Nullable<PgSnapshot>,
        window_last -> Nullable<Int8>,
        moved_at -> Timestamptz,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use super::sql_types::Xid8;

    outbox_log (id) {
        id -> Int8,
        tx -> Xid8,
        event_id -> Uuid,
        topic -> Text,
        message_key -> Text,
        event_type -> Text,
        correlation_id -> Text,
        traceparent -> Nullable<Text>,
        envelope -> Json,
        created_at -> Timestamptz,
        lane -> Int2,
    }
}

diesel::table! {
    outbox_relays (member) {
        member -> Int8,
        seen_at -> Timestamptz,
    }
}

diesel::allow_tables_to_appear_in_same_query!(inbox_log, outbox_lanes, outbox_log, outbox_relays,);
