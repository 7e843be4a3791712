//! The outbox log gives its space back a partition at a time (`relay/src/reclaim.rs`): a
//! partition goes as soon as every lane has published past it, not at the relay's next
//! housekeeping turn; a reader holding it only puts that off (the relay and the writers go on,
//! and the space comes back shortly after the reader is gone); and nothing unpublished is lost.

use std::cell::RefCell;
use std::collections::HashSet;
use std::time::Duration;

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection as _};
use e2e::databases::count;
use e2e::outbox::{LogOnly, event_id};
use e2e::{TestSystem, kafka};
use relay::reclaim::SLOT_BITS;
use relay::relay::OutboxRelay;
use relay::settings::RelaySettings;
use tokio_util::sync::CancellationToken;

/// Ids per partition.
const GENERATION: i64 = 1 << SLOT_BITS;

#[derive(QueryableByName)]
struct Written {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    event_id: uuid::Uuid,
}

/// Writes `rows` events on `topic` in one transaction, their keys spread over every lane.
async fn write_many(conn: &mut AsyncPgConnection, topic: &str, rows: i64) -> Vec<uuid::Uuid> {
    let written: Vec<Written> = diesel::sql_query(
        "INSERT INTO outbox_log (event_id, topic, message_key, event_type, correlation_id, envelope)
         SELECT e.id, $1, 'k' || (g % 97), 'Test', 'reclaim', jsonb_build_object('event_id', e.id, 'seq', g)
           FROM generate_series(1, $2) AS g, LATERAL (SELECT gen_random_uuid() AS id) e
         RETURNING event_id",
    )
    .bind::<Text, _>(topic)
    .bind::<BigInt, _>(rows)
    .load(conn)
    .await
    .expect("written");
    written.into_iter().map(|w| w.event_id).collect()
}

async fn rows_in(conn: &mut AsyncPgConnection, slot: i64) -> i64 {
    count(conn, &format!("SELECT count(*) AS count FROM outbox_log_{slot}")).await
}

/// Whether every lane's written position is past the end of generation `generation`: all of
/// it is published.
async fn lanes_passed(conn: &mut AsyncPgConnection, generation: i64) -> bool {
    let last = (generation + 1) * GENERATION - 1;
    count(conn, "SELECT COALESCE(min(floor_id), 0) AS count FROM outbox_lanes").await >= last
}

#[tokio::test]
async fn a_published_partition_is_given_back_as_soon_as_the_lanes_pass_it_and_a_reader_only_puts_that_off() {
    e2e::init_telemetry();
    let log = LogOnly::create("r").await;
    let database = &log.database;
    let (kafka, topic) = log.topic("reclaim").await;

    // Housekeeping turns an hour apart: only the lanes passing a generation, and a retry
    // after a held partition, can give space back within this test.
    let settings = RelaySettings { housekeeping_every_ms: 3_600_000, ..RelaySettings::default() };
    let shutdown = CancellationToken::new();
    let relay = OutboxRelay::new("order", database.url.clone(), &kafka, settings).expect("relay");
    let running = tokio::spawn(relay.run(shutdown.clone()));

    // A trickle of single events meanwhile, as live traffic, so that the lanes' positions keep
    // moving after each bulk write.
    let trickle = {
        let (url, topic, stop) = (database.url.clone(), topic.clone(), shutdown.child_token());
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut conn = TestSystem::connect(&url).await;
                let mut written = Vec::new();
                while !stop.is_cancelled() {
                    let key = format!("t{}", written.len() % 13);
                    let event =
                        e2e::outbox::write_test_event(&mut conn, &topic, &key, "reclaim", serde_json::json!({}));
                    written.push(event.await.event_id);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                written
            }
        });
        (task, stop)
    };

    let mut conn = TestSystem::connect(&database.url).await;
    // Someone reads partition 0 (a pg_dump, a report) and keeps it.
    let mut reader = TestSystem::connect(&database.url).await;
    reader.batch_execute("BEGIN; SELECT count(*) FROM outbox_log_0;").await.expect("reader");

    // Generation 0 filled, and the lanes carry on past it (the relay does not wait for the
    // reader): the partition is due, but held.
    let mut expected = write_many(&mut conn, &topic, GENERATION + 500).await;
    e2e::eventually_async("the lanes passing generation 0", || {
        let url = database.url.clone();
        async move { lanes_passed(&mut TestSystem::connect(&url).await, 0).await }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(rows_in(&mut conn, 0).await > 0, "a partition someone held was truncated");

    // The reader goes: the partition comes back soon, not at the next turn an hour away.
    reader.batch_execute("COMMIT").await.expect("reader done");
    e2e::eventually_async("partition 0 given back once its reader went", || {
        let url = database.url.clone();
        async move { rows_in(&mut TestSystem::connect(&url).await, 0).await == 0 }
    })
    .await;

    // Generation 1 filled and passed, nobody holding it: given back as soon as it is passed.
    expected.extend(write_many(&mut conn, &topic, GENERATION).await);
    e2e::eventually_async("partition 1 given back once the lanes passed it", || {
        let url = database.url.clone();
        async move {
            let mut conn = TestSystem::connect(&url).await;
            lanes_passed(&mut conn, 1).await && rows_in(&mut conn, 1).await == 0
        }
    })
    .await;

    // Nothing unpublished went with them: every event is on the topic.
    trickle.1.cancel();
    let trickled = trickle.0.await.expect("trickle");
    assert!(trickled.len() > 20, "the trickle wrote {} events", trickled.len());
    expected.extend(trickled);
    let wanted: HashSet<uuid::Uuid> = expected.into_iter().collect();
    // The relay publishes at least once, so copies may come: read until every id was seen (each
    // message parsed once), not until as many messages as ids arrived.
    let seen = RefCell::new((0, HashSet::new()));
    kafka::read_topic_until(&kafka, &topic, Duration::from_secs(60), |messages| {
        let (parsed, ids) = &mut *seen.borrow_mut();
        ids.extend(messages[*parsed..].iter().filter_map(event_id));
        *parsed = messages.len();
        wanted.is_subset(ids)
    })
    .await;
    let missing = wanted.difference(&seen.borrow().1).count();
    assert_eq!(missing, 0, "events lost with a partition");
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), running).await;
}

#[derive(QueryableByName)]
struct Plan {
    #[diesel(sql_type = Text)]
    plan: String,
}

/// The backlog is counted on the relays' second session every second and by `/health`: it must
/// cost the rows waiting, not the rows the log holds, which grow while a `pg_dump` keeps the
/// partitions from being given back (messaging migration 000013).
#[tokio::test]
async fn counting_the_backlog_reads_the_rows_above_the_floors_not_the_whole_log() {
    let log = LogOnly::create("b").await;
    let database = &log.database;
    let mut conn = TestSystem::connect(&database.url).await;
    // A log of 120,000 rows (as one a dump held for minutes), of which the newest 400 wait: the
    // floors stand just below them, and the positions have seen none of them.
    write_many(&mut conn, "held.topic", 120_000).await;
    conn.batch_execute(
        "UPDATE outbox_lanes SET floor_id = (SELECT max(id) - 400 FROM outbox_log), done = '3:3:', window_end = NULL;
         ANALYZE outbox_log; ANALYZE outbox_lanes;",
    )
    .await
    .expect("floors");

    let backlog = relay::backlog::measure(&mut conn).await.expect("measured");
    assert_eq!(backlog.rows, 400, "the rows above the floors wait");

    // The measurement's own statement, explained with the buffers it touched.
    conn.batch_execute(
        "CREATE FUNCTION explained(statement text) RETURNS text LANGUAGE plpgsql AS $$
         DECLARE plan text;
         BEGIN EXECUTE 'EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ' || statement INTO plan; RETURN plan; END $$",
    )
    .await
    .expect("explain function");
    let statement = relay::backlog::MEASURE.replace("$1", &relay::backlog::COUNTED_AT_MOST.to_string());
    let plan: Plan = diesel::sql_query("SELECT explained($1) AS plan")
        .bind::<Text, _>(statement)
        .get_result(&mut conn)
        .await
        .expect("explained");
    let plan: serde_json::Value = serde_json::from_str(&plan.plan).expect("a JSON plan");
    let blocks = plan[0]["Plan"]["Shared Hit Blocks"].as_u64().unwrap_or(0)
        + plan[0]["Plan"]["Shared Read Blocks"].as_u64().unwrap_or(0);
    let log_blocks = count(
        &mut conn,
        "SELECT sum(relpages)::bigint AS count FROM pg_class WHERE relname LIKE 'outbox_log\\_%' AND relkind = 'r'",
    )
    .await;
    assert!(blocks * 10 < log_blocks as u64, "counting 400 waiting rows read {blocks} blocks of a log of {log_blocks}");
}
