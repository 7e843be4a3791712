//! The relay's two ends, as [`crate::pipeline`] uses them: the outbox log on the relay's
//! database session ([`Store`]) and the idempotent producer ([`Sink`]).

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Nullable, SmallInt, Text, Timestamptz, Untyped};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures::FutureExt as _;
use futures::future::BoxFuture;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use uuid::Uuid;

use crate::metrics::{OutboxMetrics, Stage};
use crate::pipeline::{Fetched, Sink, Store};
use crate::relay::RelayError;
use crate::standby::StandbyWait;
use crate::window::{BadSnapshot, LaneRead, Snapshot};

/// An outbox row as the relay publishes it. The envelope is the text its writer printed (a
/// `json` column, decision 0034), sent as it is: parsing it and printing it again to send the
/// same document was most of the relay's CPU (`scripts/profile drain`), and printing `jsonb`
/// back to text about 40 % of the read statement's time.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub id: i64,
    pub lane: i16,
    pub event_id: Uuid,
    pub topic: String,
    pub message_key: String,
    pub event_type: String,
    pub correlation_id: String,
    pub traceparent: Option<String>,
    pub payload: String,
    pub created_at: DateTime<Utc>,
}

/// The read statement ([`Read`]). Its text does not change, so diesel prepares it once per
/// session and Postgres plans it once for any parameters (decision 0023).
///
/// For each lane asked (`$1`…`$4`: lane, `lo`, `hi` or NULL, `after`), the next `$8` rows in
/// id order after where the lane's read starts, of the transactions `hi` (or, for a window
/// this read opens, the statement's own snapshot) sees and `lo` does not. The start is
/// `after`, or lower for a late transaction (`$5`…`$7`: lane, transaction id, floor) that has
/// committed by now (`crate::window`). With the rows, or alone when there are none: the
/// statement's snapshot, the next transaction id, the last outbox id handed out (never
/// ahead of it: see `outbox_last_id()` in messaging migration 000012) and the WAL insert
/// position, past every commit the snapshot shows ([`crate::standby`]).
const READ: &str = "\
WITH tick AS MATERIALIZED (
    SELECT pg_current_snapshot() AS snap, outbox_next_xid() AS next_xid, outbox_last_id() AS seq,
           pg_current_wal_insert_lsn() AS wal
), lanes AS MATERIALIZED (
    SELECT w.lane, w.lo::pg_snapshot AS lo, w.hi::pg_snapshot AS hi,
           LEAST(w.after, (SELECT min(late.floor_id)
                             FROM unnest($5::smallint[], $6::text[], $7::bigint[]) AS late (lane, xid, floor_id), tick
                            WHERE late.lane = w.lane AND pg_visible_in_snapshot(late.xid::xid8, tick.snap))) AS start
      FROM unnest($1::smallint[], $2::text[], $3::text[], $4::bigint[]) AS w (lane, lo, hi, after)
)
SELECT tick.snap::text AS snapshot, tick.next_xid::text AS next_xid, tick.seq, tick.wal::text AS wal,
       r.id, r.lane, r.event_id, r.topic, r.message_key, r.event_type, r.correlation_id, r.traceparent,
       r.payload, r.created_at
  FROM tick LEFT JOIN (
       SELECT o.id, o.lane, o.event_id, o.topic, o.message_key, o.event_type, o.correlation_id, o.traceparent,
              o.envelope::text AS payload, o.created_at
         FROM lanes CROSS JOIN LATERAL (
              SELECT * FROM outbox_log o
               WHERE o.lane = lanes.lane AND o.id > lanes.start
                 AND NOT pg_visible_in_snapshot(o.tx, lanes.lo)
                 AND (lanes.hi IS NULL OR pg_visible_in_snapshot(o.tx, lanes.hi))
               ORDER BY o.id LIMIT $8) o
       ) r ON true
 ORDER BY r.lane, r.id";

/// [`READ`] with its parameters.
struct Read {
    lanes: Vec<i16>,
    los: Vec<String>,
    his: Vec<Option<String>>,
    afters: Vec<i64>,
    late_lanes: Vec<i16>,
    late_xids: Vec<String>,
    late_floors: Vec<i64>,
    limit: i64,
}

impl Read {
    fn new(reads: &[LaneRead], limit: i64) -> Self {
        let late = reads.iter().flat_map(|r| r.late.iter().map(move |&(xid, floor)| (r.lane, xid, floor)));
        Self {
            lanes: reads.iter().map(|r| r.lane).collect(),
            los: reads.iter().map(|r| r.lo.to_string()).collect(),
            his: reads.iter().map(|r| r.hi.as_ref().map(ToString::to_string)).collect(),
            afters: reads.iter().map(|r| r.after).collect(),
            late_lanes: late.clone().map(|(lane, _, _)| lane).collect(),
            late_xids: late.clone().map(|(_, xid, _)| xid.to_string()).collect(),
            late_floors: late.map(|(_, _, floor)| floor).collect(),
            limit,
        }
    }
}

impl QueryId for Read {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for Read {
    type SqlType = Untyped;
}

impl QueryFragment<Pg> for Read {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        // The text is READ with each `$n` replaced by the n-th parameter (diesel numbers the
        // binds in the order they are pushed).
        let mut rest = READ;
        while let Some(at) = rest.find('$') {
            out.push_sql(&rest[..at]);
            let digits = rest[at + 1..].find(|c: char| !c.is_ascii_digit()).map_or(rest.len() - at - 1, |n| n);
            let number = &rest[at + 1..at + 1 + digits];
            rest = &rest[at + 1 + digits..];
            match number {
                "1" => out.push_bind_param::<Array<SmallInt>, _>(&self.lanes)?,
                "2" => out.push_bind_param::<Array<Text>, _>(&self.los)?,
                "3" => out.push_bind_param::<Array<Nullable<Text>>, _>(&self.his)?,
                "4" => out.push_bind_param::<Array<BigInt>, _>(&self.afters)?,
                "5" => out.push_bind_param::<Array<SmallInt>, _>(&self.late_lanes)?,
                "6" => out.push_bind_param::<Array<Text>, _>(&self.late_xids)?,
                "7" => out.push_bind_param::<Array<BigInt>, _>(&self.late_floors)?,
                "8" => out.push_bind_param::<BigInt, _>(&self.limit)?,
                other => return Err(diesel::result::Error::QueryBuilderError(format!("no parameter ${other}").into())),
            }
        }
        out.push_sql(rest);
        Ok(())
    }
}

/// One row of [`READ`]: the tick, and a row of the outbox unless none came back.
#[derive(QueryableByName)]
struct ReadRow {
    #[diesel(sql_type = Text)]
    snapshot: String,
    #[diesel(sql_type = Text)]
    next_xid: String,
    #[diesel(sql_type = BigInt)]
    seq: i64,
    #[diesel(sql_type = Text)]
    wal: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    id: Option<i64>,
    #[diesel(sql_type = Nullable<SmallInt>)]
    lane: Option<i16>,
    #[diesel(sql_type = Nullable<diesel::sql_types::Uuid>)]
    event_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<Text>)]
    topic: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    message_key: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    event_type: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    correlation_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    traceparent: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    payload: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    created_at: Option<DateTime<Utc>>,
}

impl ReadRow {
    fn outgoing(self) -> Option<Outgoing> {
        Some(Outgoing {
            id: self.id?,
            lane: self.lane?,
            event_id: self.event_id?,
            topic: self.topic?,
            message_key: self.message_key?,
            event_type: self.event_type?,
            correlation_id: self.correlation_id?,
            traceparent: self.traceparent,
            payload: self.payload?,
            created_at: self.created_at?,
        })
    }
}

fn unreadable(error: impl std::error::Error + Send + Sync + 'static) -> diesel::result::Error {
    diesel::result::Error::DeserializationError(Box::new(error))
}

/// Reads the next rows of `reads`' lanes, `limit` per lane, on `conn`; with the WAL insert
/// position the read saw.
pub async fn fetch(conn: &mut AsyncPgConnection, reads: &[LaneRead], limit: i64) -> QueryResult<(Fetched, String)> {
    let rows: Vec<ReadRow> = Read::new(reads, limit).load(conn).await?;
    let first = <[ReadRow]>::first(&rows).ok_or_else(|| unreadable(BadSnapshot("the read returned no row".into())))?;
    let snapshot = Snapshot::parse(&first.snapshot).map_err(unreadable)?;
    let next_xid = first.next_xid.parse::<u64>().map_err(unreadable)?;
    let (seq, wal) = (first.seq, first.wal.clone());
    let rows = rows.into_iter().filter_map(ReadRow::outgoing).collect();
    Ok((Fetched { snapshot, next_xid, seq, rows }, wal))
}

impl Store for AsyncPgConnection {
    type Error = diesel::result::Error;

    async fn fetch(&mut self, reads: &[LaneRead], limit: i64) -> QueryResult<Fetched> {
        Ok(fetch(self, reads, limit).await?.0)
    }
}

/// The outbox log on the relay's session, each read's time recorded, its rows handed over
/// only once the synchronous standbys hold them ([`crate::standby`]).
pub struct LogOutbox<'c> {
    pub conn: &'c mut AsyncPgConnection,
    pub metrics: &'c OutboxMetrics,
    pub standbys: StandbyWait,
}

impl Store for LogOutbox<'_> {
    type Error = RelayError;

    async fn fetch(&mut self, reads: &[LaneRead], limit: i64) -> Result<Fetched, RelayError> {
        let started = std::time::Instant::now();
        let fetched = fetch(self.conn, reads, limit).await;
        self.metrics.stage(Stage::read, started.elapsed());
        let (fetched, wal) = fetched?;
        if self.standbys.is_on() && !fetched.rows.is_empty() {
            crate::standby::until_flushed(&self.standbys, self.conn, &wal, self.metrics).await?;
        }
        Ok(fetched)
    }
}

impl Sink for FutureProducer {
    /// Hands the row to the producer's queue at once; the future is its acknowledgement.
    fn send(&self, row: &Outgoing) -> BoxFuture<'static, Result<(), KafkaError>> {
        let record = FutureRecord::to(&row.topic).key(&row.message_key).payload(&row.payload).headers(headers(row));
        match self.send_result(record) {
            Ok(delivery) => async move {
                match delivery.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((error, _))) => Err(error),
                    Err(_) => Err(KafkaError::Canceled),
                }
            }
            .boxed(),
            Err((error, _)) => futures::future::ready(Err(error)).boxed(),
        }
    }
}

/// `event_id`, `event_type`, `correlation_id` and `traceparent` travel as headers too, so a
/// message can be routed and traced without parsing its body.
fn headers(row: &Outgoing) -> OwnedHeaders {
    let event_id = row.event_id.to_string();
    let mut headers = OwnedHeaders::new()
        .insert(Header { key: "event_id", value: Some(event_id.as_str()) })
        .insert(Header { key: "event_type", value: Some(row.event_type.as_str()) })
        .insert(Header { key: "correlation_id", value: Some(row.correlation_id.as_str()) });
    if let Some(traceparent) = &row.traceparent {
        headers = headers.insert(Header { key: "traceparent", value: Some(traceparent.as_str()) });
    }
    headers
}

#[cfg(test)]
mod tests {
    use diesel::pg::Pg;
    use diesel::query_builder::QueryFragment;

    use super::{READ, Read};
    use crate::window::{LaneRead, Snapshot};

    /// The read is a prepared statement (its text never changes) with a bind for every
    /// parameter of [`READ`].
    #[test]
    fn the_read_stays_one_prepared_statement() {
        let reads = [LaneRead { lane: 2, lo: Snapshot::nothing(), hi: None, after: 7, late: vec![(9, 3)] }];
        let query = Read::new(&reads, 50);
        assert!(query.is_safe_to_cache_prepared(&Pg).unwrap(), "the read would be planned on every call");
        let sql = diesel::debug_query::<Pg, _>(&query).to_string();
        assert_eq!(sql.matches('$').count(), READ.matches('$').count(), "{sql}");
        assert!(sql.contains("LIMIT $8"), "{sql}");
    }

    /// A floor comes from the last id the read saw handed out; read from the sequence's
    /// relation, that can be 32 ahead of the truth, and the rows in between were skipped once
    /// (decision 0026). The read takes it only through `outbox_last_id()`.
    #[test]
    fn the_read_never_takes_the_sequence_from_its_relation() {
        assert!(READ.contains("outbox_last_id() AS seq"), "{READ}");
        assert!(!READ.contains("FROM outbox_id_seq"), "{READ}");
        assert!(!crate::reclaim::BOUNDS.contains("FROM outbox_id_seq"), "{}", crate::reclaim::BOUNDS);
    }
}
