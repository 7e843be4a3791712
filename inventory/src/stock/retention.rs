//! Forgetting old stock levels (decision 0036). Every movement appends a level, so a SKU's
//! series grows by one row per line moved, and only its newest level is its stock: the older
//! ones are a trail the ledger (`stock_ledger`, the books the checker reads) already keeps in
//! full. Levels older than the retention are deleted, a SKU at a time from its oldest, in
//! short batches; a SKU's newest level is never deleted, however old.
//!
//! Deleting here costs the movements nothing: they read a series from its newest end (one
//! step down the `(sku, seq)` index) and never lock an old level, and a delete takes no lock a
//! movement or a `pg_dump` waits for. A snapshot held meanwhile keeps the deleted rows until it
//! ends, at the oldest end of each series, where only the next turn of this walks over them.
//! The ledger has no retention: it is the record that the books balance.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use platform::db::PgPool;
use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::tables::products;

/// `INVENTORY__LEVELS__*` settings.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct LevelRetention {
    /// How long a level is kept after it was appended (7 days by default), unless it is the
    /// SKU's newest, which is kept for ever.
    pub keep_hours: u64,
    /// How often the older ones are deleted.
    pub forget_every_secs: u64,
    /// How many levels one delete statement (one short transaction) removes at most.
    pub batch: i64,
}

impl Default for LevelRetention {
    fn default() -> Self {
        Self { keep_hours: 7 * 24, forget_every_secs: 600, batch: 5_000 }
    }
}

#[derive(QueryableByName)]
struct Forgotten {
    #[diesel(sql_type = BigInt)]
    seq: i64,
}

/// Deletes, of `sku`'s levels after `after` in its series, the first `batch` that were
/// appended before `cutoff` and are not its newest. Returns the sequence numbers deleted.
async fn forget_batch(
    conn: &mut AsyncPgConnection,
    sku: &str,
    after: i64,
    cutoff: DateTime<Utc>,
    batch: i64,
) -> diesel::QueryResult<Vec<i64>> {
    let forgotten: Vec<Forgotten> = diesel::sql_query(
        "WITH oldest AS (\
             SELECT seq, created_at FROM stock_levels WHERE sku = $1 AND seq > $2 ORDER BY seq LIMIT $4\
         ), newest AS (SELECT max(seq) AS seq FROM stock_levels WHERE sku = $1) \
         DELETE FROM stock_levels s USING oldest o, newest n \
         WHERE s.sku = $1 AND s.seq = o.seq AND o.seq < n.seq AND o.created_at < $3 \
         RETURNING s.seq",
    )
    .bind::<Text, _>(sku)
    .bind::<BigInt, _>(after)
    .bind::<Timestamptz, _>(cutoff)
    .bind::<BigInt, _>(batch)
    .load(conn)
    .await?;
    Ok(forgotten.into_iter().map(|row| row.seq).collect())
}

/// Deletes every level appended before `cutoff` that is not its SKU's newest, `batch` at a
/// time. A SKU's walk stops at the first batch with a level it keeps: the levels after it are
/// younger, bar the few that a slow transaction stamped earlier than a level before them,
/// which the next turns take. Returns how many levels were deleted.
pub async fn forget(conn: &mut AsyncPgConnection, cutoff: DateTime<Utc>, batch: i64) -> diesel::QueryResult<u64> {
    let batch = batch.max(1);
    let skus: Vec<String> = products::table.select(products::sku).order(products::sku).load(conn).await?;
    let mut total = 0u64;
    for sku in skus {
        let mut after = -1;
        loop {
            let forgotten = forget_batch(conn, &sku, after, cutoff, batch).await?;
            total += forgotten.len() as u64;
            match forgotten.iter().max() {
                Some(&last) if forgotten.len() as i64 == batch => after = last,
                _ => break,
            }
        }
    }
    Ok(total)
}

/// Forgets old levels as `settings` say until shutdown, counting them in `forgotten`. A failed
/// turn is tried again at the next: nothing depends on it but the table's size.
pub fn forget_periodically(
    pool: PgPool,
    settings: LevelRetention,
    forgotten: Counter,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    let keep = i64::try_from(settings.keep_hours).ok().and_then(chrono::Duration::try_hours);
    let every = Duration::from_secs(settings.forget_every_secs.max(1));
    platform::db::every_until_shutdown(pool, every, "forgetting old stock levels", shutdown, move |conn| {
        // A retention too long to subtract keeps everything.
        let cutoff = keep.and_then(|keep| Utc::now().checked_sub_signed(keep)).unwrap_or(DateTime::<Utc>::MIN_UTC);
        let forgotten = forgotten.clone();
        Box::pin(async move {
            let count = forget(conn, cutoff, settings.batch).await?;
            if count > 0 {
                forgotten.inc_by(count);
                tracing::info!(levels = count, %cutoff, "stock levels older than the retention forgotten");
            }
            Ok(())
        })
    })
}
