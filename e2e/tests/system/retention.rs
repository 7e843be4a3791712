//! The inbox does not grow without bound, and the purge keeps what may still be redelivered.

use std::time::Duration;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use e2e::TestSystem;
use schema::tables::messaging::inbox;

#[tokio::test]
async fn the_inbox_purge_removes_old_rows_and_keeps_recent_ones() {
    let system = TestSystem::start().await;
    let mut conn = TestSystem::connect(&system.inventory_db).await;
    let row = |age_hours: i64| {
        (
            inbox::event_id.eq(uuid::Uuid::now_v7()),
            inbox::event_type.eq("OrderPlaced"),
            inbox::topic.eq("orders.events"),
            inbox::kafka_partition.eq(0),
            inbox::kafka_offset.eq(age_hours),
            inbox::received_at.eq(chrono::Utc::now() - chrono::Duration::hours(age_hours)),
        )
    };
    diesel::insert_into(inbox::table)
        .values(vec![row(400), row(337), row(335), row(1)])
        .execute(&mut conn)
        .await
        .expect("rows");

    let purged = messaging::inbox::purge(&mut conn, Duration::from_secs(336 * 3600)).await.expect("purge");

    assert_eq!(purged, 2, "rows older than 14 days are gone");
    let mut left: Vec<i64> = inbox::table.select(inbox::kafka_offset).load(&mut conn).await.expect("rows");
    left.sort();
    assert_eq!(left, [1, 335], "rows within the window stay");
    system.stop().await;
}
