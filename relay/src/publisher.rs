//! The relay: moves outbox rows of one database to Kafka.
//!
//! One session does everything for an outbox: it holds the leader lock (a session advisory
//! lock), LISTENs for inserts, reads batches and deletes what Kafka acknowledged. If that
//! session dies, the lock and the ability to delete go with it, and a standby relay takes
//! the lock within its retry interval. Rows are read in id order and only a per-order prefix
//! of acknowledged rows is deleted, so events of one order are never published out of order
//! (see `outbox` for why ids of one order follow commit order). A crash between the
//! acknowledgement and the delete re-publishes the batch; consumers deduplicate by event id.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use diesel::ConnectionError;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool};
use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl};
use futures::{FutureExt as _, StreamExt as _};
use platform::config::KafkaSettings;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use schema::tables::messaging::outbox;
use tokio_util::sync::CancellationToken;

use crate::metrics::RelayMetrics;
use crate::outbox::OutboxRow;
use crate::stats::RelayStats;

/// The advisory lock that elects the active relay of one database's outbox.
const LEADER_LOCK: i64 = 0x6f75_7462_6f78; // "outbox"

/// How a relay behaves.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct RelaySettings {
    /// Fallback poll when no notification arrives (a lost NOTIFY, a restarted listener).
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Whether to LISTEN at all; off measures pure polling (see the benchmarks).
    #[serde(default = "default_true")]
    pub listen: bool,
    #[serde(default = "default_batch_size")]
    pub batch_size: i64,
    /// How often a standby relay tries to take the leader lock.
    #[serde(default = "default_standby_retry_ms")]
    pub standby_retry_ms: u64,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            poll_interval_ms: default_poll_interval_ms(),
            listen: true,
            batch_size: default_batch_size(),
            standby_retry_ms: default_standby_retry_ms(),
        }
    }
}

fn default_poll_interval_ms() -> u64 {
    1_000
}
fn default_true() -> bool {
    true
}
fn default_batch_size() -> i64 {
    500
}
fn default_standby_retry_ms() -> u64 {
    1_000
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("cannot connect to the outbox database: {0}")]
    Connect(#[from] ConnectionError),
    #[error("outbox database: {0}")]
    Query(#[from] diesel::result::Error),
    #[error(transparent)]
    Injected(#[from] platform::crash::InjectedFault),
}

/// Relays one database's outbox to Kafka.
pub struct OutboxRelay {
    metrics: Option<RelayMetrics>,
    name: String,
    database_url: String,
    kafka: KafkaSettings,
    producer: FutureProducer,
    settings: RelaySettings,
    stats: Arc<RelayStats>,
}

impl OutboxRelay {
    /// A relay for the outbox in `database_url`, with its own producer.
    pub fn new(
        name: impl Into<String>,
        database_url: impl Into<String>,
        kafka: &KafkaSettings,
        settings: RelaySettings,
    ) -> rdkafka::error::KafkaResult<Self> {
        Ok(Self {
            metrics: None,
            name: name.into(),
            database_url: database_url.into(),
            kafka: kafka.clone(),
            producer: platform::kafka::producer(kafka)?,
            settings,
            stats: Arc::default(),
        })
    }

    /// Records publications, latency and backlog in `metrics`.
    pub fn with_metrics(mut self, metrics: RelayMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn stats(&self) -> Arc<RelayStats> {
        Arc::clone(&self.stats)
    }

    /// Relays until `shutdown`, reconnecting (and re-electing) after any database error.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut delay = Duration::from_millis(200);
        while !shutdown.is_cancelled() {
            let result = self.lead(&shutdown).await;
            self.stats.active.store(false, Ordering::Relaxed);
            if let Some(metrics) = &self.metrics {
                metrics.active(&self.name, false);
            }
            match result {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(outbox = %self.name, %error, retry_in_ms = delay.as_millis() as u64, "relay lost its database session");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        tracing::info!(outbox = %self.name, "relay stopped");
    }

    /// One session: wait to become leader, then relay until shutdown or an error.
    async fn lead(&mut self, shutdown: &CancellationToken) -> Result<(), RelayError> {
        let mut conn = AsyncPgConnection::establish(&self.database_url).await?;
        if !self.wait_for_leadership(&mut conn, shutdown).await? {
            return Ok(());
        }
        self.stats.active.store(true, Ordering::Relaxed);
        if let Some(metrics) = &self.metrics {
            metrics.active(&self.name, true);
        }
        tracing::info!(outbox = %self.name, "this relay is now the active one");
        if self.settings.listen {
            diesel::sql_query("LISTEN outbox").execute(&mut conn).await?;
        }
        let poll = Duration::from_millis(self.settings.poll_interval_ms);
        let mut backlog_measured = std::time::Instant::now() - Duration::from_secs(60);
        loop {
            drain_notifications(&mut conn);
            let relayed = self.relay_batch(&mut conn).await?;
            if backlog_measured.elapsed() >= Duration::from_secs(1) {
                self.measure_backlog(&mut conn).await?;
                backlog_measured = std::time::Instant::now();
            }
            if relayed as i64 >= self.settings.batch_size {
                if shutdown.is_cancelled() {
                    return Ok(());
                }
                continue; // more is waiting
            }
            let mut notifications = std::pin::pin!(conn.notifications_stream());
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(poll) => {}
                notification = notifications.next(), if self.settings.listen => {
                    if let Some(Err(error)) = notification {
                        return Err(error.into());
                    }
                }
            }
        }
    }

    /// After failed deliveries: replaces the producer if it has a fatal error (an idempotent
    /// producer that the broker can no longer sequence, e.g. after its producer id expired,
    /// cannot send again; a new one starts with a fresh producer id), and pauses so that a
    /// relay whose broker is down does not spin.
    async fn recover_from_failed_deliveries(&mut self) {
        if let Some((code, reason)) = self.producer.client().fatal_error() {
            tracing::warn!(outbox = %self.name, ?code, reason, "the producer failed fatally; replacing it");
            match platform::kafka::producer(&self.kafka) {
                Ok(producer) => self.producer = producer,
                Err(error) => {
                    tracing::warn!(outbox = %self.name, %error, "cannot create a new producer; keeping the old one")
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    /// Measures the backlog from the outbox itself, for `/health` and the gauges.
    async fn measure_backlog(&self, conn: &mut AsyncPgConnection) -> Result<(), RelayError> {
        #[derive(QueryableByName)]
        struct Backlog {
            #[diesel(sql_type = BigInt)]
            rows: i64,
            #[diesel(sql_type = diesel::sql_types::Double)]
            oldest_age: f64,
        }
        let backlog: Backlog = diesel::sql_query(
            "SELECT count(*) AS rows, COALESCE(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest_age FROM outbox",
        )
        .get_result(conn)
        .await?;
        self.stats.backlog_rows.store(backlog.rows, Ordering::Relaxed);
        self.stats.backlog_oldest_ms.store((backlog.oldest_age * 1e3) as i64, Ordering::Relaxed);
        if let Some(metrics) = &self.metrics {
            metrics.backlog(&self.name, backlog.rows, backlog.oldest_age);
        }
        Ok(())
    }

    /// Returns false if shutdown came before the lock.
    async fn wait_for_leadership(
        &self,
        conn: &mut AsyncPgConnection,
        shutdown: &CancellationToken,
    ) -> Result<bool, RelayError> {
        let mut logged = false;
        loop {
            if try_lock(conn).await? {
                return Ok(true);
            }
            if !logged {
                tracing::info!(outbox = %self.name, "another relay is active; standing by");
                logged = true;
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(false),
                () = tokio::time::sleep(Duration::from_millis(self.settings.standby_retry_ms)) => {}
            }
        }
    }

    /// Publishes one batch and deletes what was acknowledged. Returns how many rows it read.
    #[tracing::instrument(skip_all, fields(outbox = %self.name))]
    async fn relay_batch(&mut self, conn: &mut AsyncPgConnection) -> Result<usize, RelayError> {
        let rows = fetch_batch(conn, self.settings.batch_size).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let acked = publish(&self.producer, &rows).await;
        if let Some(metrics) = &self.metrics {
            let now = chrono::Utc::now();
            let acked: std::collections::HashSet<i64> = acked.iter().copied().collect();
            for row in rows.iter().filter(|r| acked.contains(&r.id)) {
                let latency = (now - row.created_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
                metrics.published(&row.topic, &self.name, latency.max(0.0));
            }
        }
        // Published and acknowledged, not yet deleted: a crash here re-publishes the batch.
        platform::crash::point("relay.after_publish_before_delete")?;
        let deleted = delete(conn, &acked).await?;
        self.stats.published.fetch_add(acked.len() as u64, Ordering::Relaxed);
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        if acked.len() < rows.len() {
            tracing::warn!(
                read = rows.len(),
                acked = acked.len(),
                "part of the batch was not acknowledged; it will be retried"
            );
            self.recover_from_failed_deliveries().await;
        }
        tracing::debug!(read = rows.len(), deleted, "batch relayed");
        Ok(rows.len())
    }
}

async fn try_lock(conn: &mut AsyncPgConnection) -> QueryResult<bool> {
    #[derive(QueryableByName)]
    struct Locked {
        #[diesel(sql_type = Bool)]
        locked: bool,
    }
    let row: Locked = diesel::sql_query("SELECT pg_try_advisory_lock($1) AS locked")
        .bind::<BigInt, _>(LEADER_LOCK)
        .get_result(conn)
        .await?;
    Ok(row.locked)
}

/// Notifications only say "look again"; we are about to, so the buffered ones are spent.
fn drain_notifications(conn: &mut AsyncPgConnection) {
    let mut notifications = std::pin::pin!(conn.notifications_stream());
    while let Some(Some(_)) = notifications.next().now_or_never() {}
}

/// The oldest `limit` rows, in the order they must be published.
pub async fn fetch_batch(conn: &mut AsyncPgConnection, limit: i64) -> QueryResult<Vec<OutboxRow>> {
    outbox::table.order(outbox::id.asc()).limit(limit).select(OutboxRow::as_select()).load(conn).await
}

/// Publishes `rows` and waits for every acknowledgement. Returns the ids that may be
/// deleted: every acknowledged row, except, for an order with a failed row, the rows after
/// its first failure (they are re-published after it, keeping the order's events in order).
pub async fn publish(producer: &FutureProducer, rows: &[OutboxRow]) -> Vec<i64> {
    let deliveries = rows.iter().map(|row| {
        let payload = row.envelope.to_string();
        let record = FutureRecord::to(&row.topic).key(&row.message_key).payload(&payload).headers(headers(row));
        let sent = producer.send_result(record).map_err(|(error, _)| error);
        async move {
            match sent {
                Ok(delivery) => match delivery.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((error, _))) => Err(error),
                    Err(_) => Err(KafkaError::Canceled),
                },
                Err(error) => Err(error),
            }
        }
    });
    let results = futures::future::join_all(deliveries).await;

    let mut first_failure: HashMap<&str, i64> = HashMap::new();
    for (row, result) in rows.iter().zip(&results) {
        if let Err(error) = result {
            tracing::warn!(event_id = %row.event_id, topic = %row.topic, %error, "event not acknowledged");
            first_failure.entry(row.message_key.as_str()).or_insert(row.id);
        }
    }
    rows.iter()
        .zip(&results)
        .filter(|(row, result)| {
            result.is_ok() && first_failure.get(row.message_key.as_str()).is_none_or(|&failed| row.id < failed)
        })
        .map(|(row, _)| row.id)
        .collect()
}

/// Deletes exactly the given rows.
pub async fn delete(conn: &mut AsyncPgConnection, ids: &[i64]) -> QueryResult<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    diesel::delete(outbox::table.filter(outbox::id.eq_any(ids))).execute(conn).await
}

/// `event_id`, `event_type`, `correlation_id` and `traceparent` travel as headers too, so a
/// message can be routed and traced without parsing its body.
fn headers(row: &OutboxRow) -> OwnedHeaders {
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
