//! The inbox does not grow without bound: a day of the inbox log is given back whole once
//! everything in it is older than the retention, and nothing received within it is lost.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use e2e::TestSystem;
use messaging::tables::inbox_log;

const KEEP: Duration = Duration::from_secs(336 * 3600);

/// A UUID v7 made at `at`, as the services make event ids.
fn id_made_at(at: DateTime<Utc>) -> uuid::Uuid {
    let ts = uuid::Timestamp::from_unix(uuid::NoContext, at.timestamp() as u64, at.timestamp_subsec_nanos());
    uuid::Uuid::new_v7(ts)
}

diesel::define_sql_function! {
    fn inbox_slot(event_id: diesel::sql_types::Uuid) -> diesel::sql_types::SmallInt;
}

/// Records an event made at `made` and received at `received`; returns its partition.
async fn remember(conn: &mut diesel_async::AsyncPgConnection, made: DateTime<Utc>, received: DateTime<Utc>) -> i16 {
    let id = id_made_at(made);
    diesel::insert_into(inbox_log::table)
        .values((
            inbox_log::event_id.eq(id),
            inbox_log::slot.eq(inbox_slot(id)),
            inbox_log::event_type.eq("OrderPlaced"),
            inbox_log::topic.eq("orders.events"),
            inbox_log::kafka_partition.eq(0),
            inbox_log::kafka_offset.eq(0),
            inbox_log::received_at.eq(received),
        ))
        .returning(inbox_log::slot)
        .get_result(conn)
        .await
        .expect("remembered")
}

async fn rows_in(conn: &mut diesel_async::AsyncPgConnection, slot: i16) -> i64 {
    inbox_log::table.filter(inbox_log::slot.eq(slot)).count().get_result(conn).await.expect("count")
}

#[tokio::test]
async fn a_day_older_than_the_retention_is_given_back_whole_and_nothing_received_within_it_is() {
    let system = TestSystem::start().await;
    let mut conn = TestSystem::connect(&system.inventory_db).await;
    let now = Utc::now();
    let days = |n: i64| chrono::Duration::days(n);

    let old = remember(&mut conn, now - days(15), now - days(15)).await;
    assert_eq!(remember(&mut conn, now - days(15), now - days(15)).await, old);
    // A day whose events are old, but one of them (its id from a clock ten days behind)
    // arrived an hour ago: its redelivery must still be recognised.
    let skewed = remember(&mut conn, now - days(10), now - days(15)).await;
    assert_eq!(remember(&mut conn, now - days(10), now - chrono::Duration::hours(1)).await, skewed);
    let today = remember(&mut conn, now, now).await;
    assert_eq!(3, [old, skewed, today].iter().collect::<std::collections::BTreeSet<_>>().len());

    // Someone reads the old day's partition (a pg_dump, a report): the retention gives up
    // at once instead of queueing a lock that everyone after it would wait behind.
    let mut reader = TestSystem::connect(&system.inventory_db).await;
    diesel_async::SimpleAsyncConnection::batch_execute(
        &mut reader,
        &format!("BEGIN; SELECT count(*) FROM inbox_log_{old};"),
    )
    .await
    .expect("reader");
    let started = std::time::Instant::now();
    let held = messaging::inbox::retain(&mut conn, KEEP, now).await.expect("retention");
    assert!(started.elapsed() < Duration::from_secs(2), "the retention waited for the reader");
    assert_eq!((held.truncated, held.busy), (vec![], vec![old as usize]));
    assert_eq!(rows_in(&mut conn, old).await, 2);
    diesel_async::SimpleAsyncConnection::batch_execute(&mut reader, "COMMIT").await.expect("reader");

    let retained = messaging::inbox::retain(&mut conn, KEEP, now).await.expect("retention");
    assert_eq!((retained.truncated, retained.busy), (vec![old as usize], vec![]));
    assert_eq!(rows_in(&mut conn, old).await, 0, "the old day is gone");
    assert_eq!(rows_in(&mut conn, skewed).await, 2, "a day with a row received within the retention stays");
    assert_eq!(rows_in(&mut conn, today).await, 1, "today stays");
    system.stop().await;
}
