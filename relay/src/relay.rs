//! One outbox's relay: one database session does everything — it holds the leader lock
//! ([`crate::leader`]), LISTENs for inserts, reads batches and deletes what Kafka
//! acknowledged ([`crate::publish`]). If the session dies, the lock and the ability to
//! delete go with it. A crash between the acknowledgement and the delete re-publishes the
//! batch; consumers deduplicate by event id.

use std::time::{Duration, Instant};

use diesel::ConnectionError;
use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl};
use futures::{FutureExt as _, StreamExt as _};
use platform::config::KafkaSettings;
use rdkafka::producer::{FutureProducer, Producer as _};
use tokio_util::sync::CancellationToken;

use crate::metrics::{OutboxMetrics, RelayMetrics};
use crate::settings::RelaySettings;
use crate::{backlog, leader, publish};

/// How often the active relay measures its backlog.
const MEASURE_EVERY: Duration = Duration::from_secs(1);

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
    name: String,
    database_url: String,
    kafka: KafkaSettings,
    producer: FutureProducer,
    settings: RelaySettings,
    metrics: OutboxMetrics,
}

impl OutboxRelay {
    /// A relay for the outbox in `database_url`, with its own producer.
    pub fn new(
        name: impl Into<String>,
        database_url: impl Into<String>,
        kafka: &KafkaSettings,
        settings: RelaySettings,
    ) -> rdkafka::error::KafkaResult<Self> {
        let name = name.into();
        Ok(Self {
            metrics: RelayMetrics::default().outbox(&name),
            name,
            database_url: database_url.into(),
            kafka: kafka.clone(),
            producer: platform::kafka::producer(kafka)?,
            settings,
        })
    }

    /// Records publications, latency and backlog in `metrics`' families.
    pub fn with_metrics(mut self, metrics: &RelayMetrics) -> Self {
        self.metrics = metrics.outbox(&self.name);
        self
    }

    /// What this relay did and saw (the same series `/metrics` shows).
    pub fn stats(&self) -> OutboxMetrics {
        self.metrics.clone()
    }

    /// Relays until `shutdown`, reconnecting (and re-electing) after any database error.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut delay = Duration::from_millis(200);
        while !shutdown.is_cancelled() {
            let result = self.lead(&shutdown).await;
            self.metrics.set_active(false);
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
        let retry = Duration::from_millis(self.settings.standby_retry_ms);
        if !leader::wait_for_leadership(&mut conn, &self.name, retry, shutdown).await? {
            return Ok(());
        }
        self.metrics.set_active(true);
        tracing::info!(outbox = %self.name, "this relay is now the active one");
        if self.settings.listen {
            diesel::sql_query("LISTEN outbox").execute(&mut conn).await?;
        }
        let poll = Duration::from_millis(self.settings.poll_interval_ms);
        let mut measured: Option<Instant> = None;
        loop {
            drain_notifications(&mut conn);
            let relayed = self.relay_batch(&mut conn).await?;
            if measured.is_none_or(|at| at.elapsed() >= MEASURE_EVERY) {
                let backlog = backlog::measure(&mut conn).await?;
                self.metrics.set_backlog(backlog.rows, backlog.oldest_age);
                measured = Some(Instant::now());
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

    /// Publishes one batch and deletes what was acknowledged. Returns how many rows it read.
    #[tracing::instrument(skip_all, fields(outbox = %self.name))]
    async fn relay_batch(&mut self, conn: &mut AsyncPgConnection) -> Result<usize, RelayError> {
        let rows = publish::fetch_batch(conn, self.settings.batch_size).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let deletable = publish::publish(&self.producer, &rows).await;
        let now = chrono::Utc::now();
        let published: std::collections::HashSet<i64> = deletable.iter().copied().collect();
        for row in rows.iter().filter(|r| published.contains(&r.id)) {
            let latency = (now - row.created_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
            self.metrics.published(&row.topic, latency.max(0.0));
        }
        // Published and acknowledged, not yet deleted: a crash here re-publishes the batch.
        platform::crash::point(crate::AFTER_PUBLISH_BEFORE_DELETE)?;
        let deleted = publish::delete(conn, &deletable).await?;
        if deletable.len() < rows.len() {
            tracing::warn!(
                read = rows.len(),
                deletable = deletable.len(),
                "part of the batch was not acknowledged; it will be retried"
            );
            self.recover_from_failed_deliveries().await;
        }
        tracing::debug!(read = rows.len(), deleted, "batch relayed");
        Ok(rows.len())
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
}

/// Notifications only say "look again"; we are about to, so the buffered ones are spent.
fn drain_notifications(conn: &mut AsyncPgConnection) {
    let mut notifications = std::pin::pin!(conn.notifications_stream());
    while let Some(Some(_)) = notifications.next().now_or_never() {}
}
