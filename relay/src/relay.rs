//! One outbox's relay: one database session holds the locks of its lanes
//! ([`crate::lanes`]), LISTENs for inserts and reads batches, with several batches in flight
//! ([`crate::pipeline`]); a second one deletes what Kafka acknowledged ([`crate::deleter`]),
//! meanwhile. If either session dies, the relay starts over with new ones: rows whose delete
//! did not commit are read and published again. A crash between the acknowledgement and the
//! delete re-publishes too; consumers deduplicate by event id.

use std::time::{Duration, Instant};

use diesel::ConnectionError;
use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl};
use futures::{FutureExt as _, StreamExt as _};
use platform::config::KafkaSettings;
use rdkafka::producer::{FutureProducer, Producer as _};
use tokio_util::sync::CancellationToken;

use crate::backlog;
use crate::deleter::{DeleteError, Deleter};
use crate::lanes::{Lanes, Refusal};
use crate::metrics::{OutboxMetrics, RelayMetrics, Stage};
use crate::pipeline::Pipeline;
use crate::publish::LaneOutbox;
use crate::settings::RelaySettings;

/// How often the active relay measures its backlog.
const MEASURE_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("cannot connect to the outbox database: {0}")]
    Connect(#[from] ConnectionError),
    #[error("outbox database: {0}")]
    Query(#[from] diesel::result::Error),
    #[error(transparent)]
    Delete(#[from] DeleteError),
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
            self.metrics.set_lanes(0);
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

    /// One run: join the outbox's relays on a new session (and open one for the deletes),
    /// then relay the lanes this instance holds until shutdown or an error.
    async fn lead(&mut self, shutdown: &CancellationToken) -> Result<(), RelayError> {
        let mut conn = AsyncPgConnection::establish(&self.database_url).await?;
        let retry = Duration::from_millis(self.settings.standby_retry_ms);
        let Some(mut lanes) = self.join(&mut conn, retry, shutdown).await? else {
            return Ok(());
        };
        if self.settings.listen {
            diesel::sql_query("LISTEN outbox").execute(&mut conn).await?;
        }
        // Idle, wake up at least as often as lanes are looked at.
        let poll = Duration::from_millis(self.settings.poll_interval_ms).min(retry);
        let mut deleter = Deleter::connect(&self.database_url, self.metrics.clone()).await?;
        let mut pipeline = Pipeline::new(self.settings.pipeline_depth, self.settings.batch_size);
        let mut measured: Option<Instant> = None;
        let mut balanced: Option<Instant> = None;
        loop {
            if drain_notifications(&mut conn) {
                pipeline.look_again();
            }
            while let Some(outcome) = deleter.try_finish() {
                deleted(&mut pipeline, outcome)?;
            }
            if balanced.is_none_or(|at| at.elapsed() >= retry) {
                self.rebalance(&mut lanes, &mut pipeline, &mut conn, &mut deleter).await?;
                balanced = Some(Instant::now());
            }
            let publishing = !lanes.held().is_empty();
            // A relay that LISTENs reads again only when it may find something: after a
            // read that came back short, new rows announce themselves with a notification.
            // (Reading after every acknowledgement found nothing two times in three.)
            let worth_reading = !pipeline.caught_up() || !self.settings.listen;
            if !shutdown.is_cancelled() && publishing && worth_reading {
                let mut outbox =
                    LaneOutbox { conn: &mut conn, count: lanes.count(), lanes: lanes.held(), metrics: &self.metrics };
                pipeline.fill(&mut outbox, &self.producer).await?;
            }
            if publishing && measured.is_none_or(|at| at.elapsed() >= MEASURE_EVERY) {
                let backlog = backlog::measure(&mut conn).await?;
                self.metrics.set_backlog(backlog.rows, backlog.oldest_age);
                measured = Some(Instant::now());
            }
            if pipeline.is_idle() {
                // Nothing in flight: the deletes under way are all there is to finish.
                if let Some(outcome) = deleter.finish().await {
                    deleted(&mut pipeline, outcome)?;
                    continue;
                }
                if shutdown.is_cancelled() {
                    return Ok(());
                }
                let mut notifications = std::pin::pin!(conn.notifications_stream());
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    // Also the safety net for a notification that never came.
                    () = tokio::time::sleep(poll) => {}
                    notification = notifications.next(), if self.settings.listen => {
                        if let Some(Err(error)) = notification {
                            return Err(error.into());
                        }
                    }
                }
                pipeline.look_again();
                continue;
            }
            // Batches are in flight. While there is room for another, a notification (new
            // rows) is worth reading for before the oldest batch is acknowledged.
            if pipeline.has_room() && self.settings.listen && !shutdown.is_cancelled() {
                let notified = {
                    let mut notifications = std::pin::pin!(conn.notifications_stream());
                    tokio::select! {
                        biased;
                        notification = notifications.next() => Some(notification),
                        () = pipeline.wait_for_oldest() => None,
                    }
                };
                if let Some(notification) = notified {
                    if let Some(Err(error)) = notification {
                        return Err(error.into());
                    }
                    pipeline.look_again();
                    continue;
                }
            }
            self.settle_oldest(&mut pipeline, &mut deleter).await?;
        }
    }

    /// Joins the outbox's relays (`crate::lanes`), waiting while that is refused. `None` if
    /// shutdown came first.
    async fn join(
        &self,
        conn: &mut AsyncPgConnection,
        retry: Duration,
        shutdown: &CancellationToken,
    ) -> Result<Option<Lanes>, RelayError> {
        let mut logged = None;
        loop {
            match Lanes::join(conn, self.settings.lanes).await? {
                Ok(lanes) => return Ok(Some(lanes)),
                Err(refusal) if logged != Some(refusal) => {
                    match refusal {
                        Refusal::SoleLeader => {
                            tracing::warn!(outbox = %self.name, "a relay without lanes holds this outbox; waiting for it to stop")
                        }
                        Refusal::OtherLaneCount(other) => tracing::error!(
                            outbox = %self.name,
                            lanes = self.settings.lanes,
                            other,
                            "another relay of this outbox uses a different lane count; waiting until none does"
                        ),
                    }
                    logged = Some(refusal);
                }
                Err(_) => {}
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(None),
                () = tokio::time::sleep(retry) => {}
            }
        }
    }

    /// Moves toward this instance's share of the lanes. Lanes it gives away must have
    /// nothing in flight, so with a surplus it first settles every batch.
    async fn rebalance(
        &mut self,
        lanes: &mut Lanes,
        pipeline: &mut Pipeline,
        conn: &mut AsyncPgConnection,
        deleter: &mut Deleter,
    ) -> Result<(), RelayError> {
        let share = lanes.fair_share(conn).await?;
        if lanes.held().len() > share {
            while !pipeline.is_idle() {
                self.settle_oldest(pipeline, deleter).await?;
            }
            while let Some(outcome) = deleter.finish().await {
                deleted(pipeline, outcome)?;
            }
        }
        let settled = pipeline.is_idle() && deleter.pending() == 0;
        if lanes.rebalance(conn, share, settled).await? {
            pipeline.look_again();
            let held = lanes.held();
            tracing::info!(outbox = %self.name, lanes = ?held, of = lanes.count(), "this relay's lanes changed");
            self.metrics.set_lanes(held.len());
        }
        Ok(())
    }

    /// Waits for the oldest batch in flight, records it, and starts deleting what the broker
    /// acknowledged. At most as many deletes as batches are under way: a delete session
    /// slower than the broker holds the relay back rather than lengthen every read's list of
    /// rows to leave out.
    #[tracing::instrument(skip_all, fields(outbox = %self.name))]
    async fn settle_oldest(&mut self, pipeline: &mut Pipeline, deleter: &mut Deleter) -> Result<(), RelayError> {
        while deleter.pending() >= self.settings.pipeline_depth.max(1) {
            let outcome = deleter.finish().await.expect("deletes are pending");
            deleted(pipeline, outcome)?;
        }
        let Some(answered) = pipeline.take_oldest().await else {
            return Ok(());
        };
        // Acknowledged, not yet deleted: a crash here re-publishes the batch.
        platform::crash::point(crate::AFTER_PUBLISH_BEFORE_DELETE)?;
        deleter.start(answered.acknowledged_ids());
        self.metrics.stage(Stage::delivery, answered.delivered_in);
        let now = chrono::Utc::now();
        for row in answered.acknowledged_rows() {
            let latency = (now - row.created_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
            self.metrics.published(&row.topic, latency.max(0.0));
        }
        let failures = answered.failures();
        if failures > 0 {
            tracing::warn!(
                sent = answered.rows.len(),
                failures,
                "part of a batch was not acknowledged; it will be sent again"
            );
            self.recover_from_failed_deliveries().await;
        }
        tracing::debug!(sent = answered.rows.len(), "batch relayed");
        Ok(())
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

/// The oldest delete under way finished. If it failed, the error ends the session; the relay
/// starts over and reads the rows that are still there.
fn deleted(pipeline: &mut Pipeline, outcome: Result<usize, DeleteError>) -> Result<(), RelayError> {
    pipeline.deleted();
    let deleted = outcome?;
    tracing::trace!(deleted, "published rows deleted");
    Ok(())
}

/// Spends the buffered notifications; whether there were any. They only say "look again".
fn drain_notifications(conn: &mut AsyncPgConnection) -> bool {
    let mut notifications = std::pin::pin!(conn.notifications_stream());
    let mut any = false;
    while let Some(Some(_)) = notifications.next().now_or_never() {
        any = true;
    }
    any
}
