//! One outbox's relay. One database session holds this instance's membership, reads its
//! lanes' windows, writes their positions and leases ([`crate::lanes`], [`crate::pipeline`]),
//! and, with nothing left to read, sleeps on LISTEN ([`crate::wake`]). A second session
//! ([`crate::housekeeping`]) measures the backlog and gives the log's finished partitions
//! back, so that neither ever waits in the way of a read. If the main session dies, the relay starts over with a new
//! one, from the positions last written: what was acknowledged since is published again, and
//! consumers deduplicate by event id.
//!
//! One room, over 300 lines: the relay's loop, its renewals and its rebalancing share one
//! session and one pipeline, and each step's order (renew before reading, settle before
//! giving lanes back) is the point.

use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::ConnectionError;
use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection as _};
use futures::{FutureExt as _, StreamExt as _};
use platform::config::KafkaSettings;
use rdkafka::producer::{FutureProducer, Producer as _};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::housekeeping::housekeeping;
use crate::lanes::Lanes;
use crate::metrics::{OutboxMetrics, RelayMetrics, Stage};
use crate::pipeline::Pipeline;
use crate::publish::LogOutbox;
use crate::reclaim::generation_of;
use crate::settings::RelaySettings;
use crate::standby::StandbyWait;
use crate::wake;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("cannot connect to the outbox database: {0}")]
    Connect(#[from] ConnectionError),
    #[error("outbox database: {0}")]
    Query(#[from] diesel::result::Error),
    #[error(transparent)]
    Injected(#[from] platform::crash::InjectedFault),
    #[error(transparent)]
    Standby(#[from] crate::standby::WaitError),
}

/// Relays one database's outbox to Kafka.
pub struct OutboxRelay {
    name: String,
    database_url: String,
    kafka: KafkaSettings,
    producer: FutureProducer,
    settings: RelaySettings,
    metrics: OutboxMetrics,
    /// The generation of the lowest floor of this instance's lanes when their positions were
    /// last written. Once it moves on, a partition may be given back: the housekeeping is
    /// woken for it then (`reclaim_now`) rather than at its next turn, so that the log holds
    /// about one partition of published rows, not one plus a turn's worth.
    written_generation: Option<i64>,
    reclaim_now: Arc<Notify>,
    /// How long to wait before looking again when a writer kept this relay from sleeping
    /// (`crate::wake`): doubles while that goes on.
    restless: Duration,
    /// When a read last found rows: an idle relay lingers awake a while after it
    /// (`linger_ms`).
    busy_at: Instant,
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
            written_generation: None,
            reclaim_now: Arc::default(),
            restless: wake::FIRST_TRY_AGAIN,
            busy_at: Instant::now(),
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

    /// Relays until `shutdown`, reconnecting (and claiming lanes anew) after any database
    /// error. On shutdown it settles what is in flight, writes its positions and gives its
    /// lanes back, so that another instance takes them at once.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let housekeeping = housekeeping(
            self.name.clone(),
            self.database_url.clone(),
            Duration::from_millis(self.settings.housekeeping_every_ms.max(10)),
            self.metrics.clone(),
            Arc::clone(&self.reclaim_now),
            shutdown.clone(),
        );
        let relaying = async {
            let mut backoff = platform::retry::Backoff::default();
            while !shutdown.is_cancelled() {
                let result = self.lead(&shutdown).await;
                self.metrics.set_lanes(0);
                match result {
                    Ok(()) => break,
                    Err(error) => {
                        let delay = backoff.next_wait();
                        tracing::warn!(outbox = %self.name, %error, retry_in_ms = delay.as_millis() as u64, "relay lost its database session");
                        if !platform::retry::Backoff::sleep(delay, &shutdown).await {
                            break;
                        }
                    }
                }
            }
        };
        // Housekeeping runs until shutdown; dropped with the relay if it is killed.
        tokio::select! {
            () = relaying => {}
            () = housekeeping => {}
        }
        tracing::info!(outbox = %self.name, "relay stopped");
    }

    /// One run: join the outbox's relays on a new session, then publish the lanes this
    /// instance holds until shutdown or an error.
    async fn lead(&mut self, shutdown: &CancellationToken) -> Result<(), RelayError> {
        let mut conn = AsyncPgConnection::establish(&self.database_url).await?;
        // Positions and leases only: one lost in a crash of the database costs a few events
        // published twice, never one lost; no need to wait for the disk.
        conn.batch_execute("SET synchronous_commit = off").await?;
        // The read is one prepared statement with arrays for parameters. Left to choose,
        // Postgres kept planning it anew for each call (a custom plan, 3 ms for a read that
        // runs in 2): one generic plan serves every read.
        conn.batch_execute("SET plan_cache_mode = force_generic_plan").await?;
        let mut lanes = Lanes::join(&mut conn, Duration::from_millis(self.settings.lease_ms)).await?;
        if self.settings.listen {
            diesel::sql_query("LISTEN outbox").execute(&mut conn).await?;
        }
        let mut pipeline = Pipeline::new(self.settings.pipeline_depth, self.settings.batch_size);
        let outcome = self.publish(&mut conn, &mut lanes, &mut pipeline, shutdown).await;
        if outcome.is_ok() {
            // Shutdown, with nothing in flight: hand the lanes over.
            let moved = pipeline.moved_positions();
            let held = lanes.held();
            lanes.release(&mut conn, &held, &moved).await?;
        }
        outcome
    }

    async fn publish(
        &mut self,
        conn: &mut AsyncPgConnection,
        lanes: &mut Lanes,
        pipeline: &mut Pipeline,
        shutdown: &CancellationToken,
    ) -> Result<(), RelayError> {
        let retry = Duration::from_millis(self.settings.standby_retry_ms);
        let write_every = Duration::from_millis(self.settings.position_every_ms);
        let mut balanced: Option<Instant> = None;
        let mut written = Instant::now();
        loop {
            // Awake, this relay reads at every turn: writers notify only while it sleeps
            // (`crate::wake`). A notification buffered meanwhile says nothing more.
            drain_notifications(conn);
            pipeline.look_again();
            let passed_a_generation = pipeline.lowest_floor().map(generation_of) > self.written_generation;
            if lanes.renewal_due()
                || (pipeline.has_moved() && (written.elapsed() >= write_every || passed_a_generation))
            {
                self.renew(conn, lanes, pipeline).await?;
                written = Instant::now();
            }
            if !shutdown.is_cancelled() && balanced.is_none_or(|at| at.elapsed() >= retry) {
                self.rebalance(conn, lanes, pipeline).await?;
                balanced = Some(Instant::now());
            }
            if !shutdown.is_cancelled() {
                self.read(conn, lanes, pipeline, &mut written).await?;
            }
            if pipeline.is_idle() {
                if shutdown.is_cancelled() {
                    return Ok(());
                }
                self.idle(conn, lanes, pipeline, shutdown, &mut written).await?;
                continue;
            }
            self.restless = wake::FIRST_TRY_AGAIN;
            self.busy_at = Instant::now();
            // Batches are in flight: wait for the oldest one's answers, renewing the leases
            // meanwhile however long the broker takes. A notification (from a writer that saw
            // this relay asleep) is worth a read if there is room for another batch.
            let renew_in = write_every.saturating_sub(written.elapsed());
            let notified = {
                let room = pipeline.has_room() && self.settings.listen && !shutdown.is_cancelled();
                let mut notifications = std::pin::pin!(conn.notifications_stream());
                tokio::select! {
                    biased;
                    notification = notifications.next(), if room => Wake::Notified(notification),
                    () = pipeline.wait_for_oldest() => Wake::Answered,
                    () = tokio::time::sleep(renew_in) => Wake::Renew,
                }
            };
            match notified {
                Wake::Notified(Some(Err(error))) => return Err(error.into()),
                Wake::Notified(_) | Wake::Renew => {}
                Wake::Answered => self.settle_oldest(pipeline).await?,
            }
        }
    }

    /// Reads what the held lanes have and hands it to the producer, renewing the leases first
    /// if they may have run out.
    async fn read(
        &mut self,
        conn: &mut AsyncPgConnection,
        lanes: &mut Lanes,
        pipeline: &mut Pipeline,
        written: &mut Instant,
    ) -> Result<(), RelayError> {
        if lanes.held().is_empty() {
            return Ok(());
        }
        if lanes.must_renew() {
            self.renew(conn, lanes, pipeline).await?;
            *written = Instant::now();
        }
        let mut outbox = LogOutbox { conn, metrics: &self.metrics, standbys: self.standby_wait() };
        pipeline.fill(&mut outbox, &self.producer).await?;
        Ok(())
    }

    /// Nothing is in flight and the last read found nothing: sleeps until a writer of the held
    /// lanes notifies, or the poll comes round. If a writer of them is between its insert and
    /// its commit (silent, because this relay was awake), it does not sleep but looks again
    /// shortly.
    async fn idle(
        &mut self,
        conn: &mut AsyncPgConnection,
        lanes: &mut Lanes,
        pipeline: &mut Pipeline,
        shutdown: &CancellationToken,
        written: &mut Instant,
    ) -> Result<(), RelayError> {
        // Wake up at least as often as lanes are looked at.
        let poll = Duration::from_millis(self.settings.poll_interval_ms.min(self.settings.standby_retry_ms));
        let held = lanes.held();
        if !self.settings.listen || held.is_empty() {
            platform::retry::Backoff::sleep(poll, shutdown).await;
            return Ok(());
        }
        if self.busy_at.elapsed() < Duration::from_millis(self.settings.linger_ms) {
            // Busy a moment ago: more rows are likely soon, and while this relay is awake its
            // writers need not notify.
            platform::retry::Backoff::sleep(wake::LINGERING_READS, shutdown).await;
            return Ok(());
        }
        if !wake::fall_asleep(conn, &held).await? {
            let wait = self.restless;
            self.restless = (wait * 2).min(wake::MOST_BETWEEN_TRIES);
            platform::retry::Backoff::sleep(wait, shutdown).await;
            return Ok(());
        }
        self.restless = wake::FIRST_TRY_AGAIN;
        let slept = async {
            // Every writer that stayed silent has committed: this read sees its rows.
            pipeline.look_again();
            self.read(conn, lanes, pipeline, written).await?;
            if !pipeline.is_idle() {
                return Ok(());
            }
            self.metrics.slept();
            let mut notifications = std::pin::pin!(conn.notifications_stream());
            tokio::select! {
                () = shutdown.cancelled() => {}
                // Also the safety net for a notification that never came.
                () = tokio::time::sleep(poll) => {}
                notification = notifications.next() => {
                    if let Some(Err(error)) = notification {
                        return Err(RelayError::from(error));
                    }
                }
            }
            Ok(())
        }
        .await;
        // After an error the session is given up, and its locks with it.
        slept?;
        wake::wake_up(conn, &held).await?;
        Ok(())
    }

    /// Renews the leases and writes the positions that moved. A lane another instance took
    /// meanwhile is dropped: what of it is in flight settles, and moves nothing.
    fn standby_wait(&self) -> StandbyWait {
        StandbyWait {
            standbys: self.settings.sync_standbys,
            bound: Duration::from_millis(self.settings.sync_standby_wait_ms),
        }
    }

    async fn renew(
        &mut self,
        conn: &mut AsyncPgConnection,
        lanes: &mut Lanes,
        pipeline: &mut Pipeline,
    ) -> Result<(), RelayError> {
        let moved = pipeline.moved_positions();
        let started = Instant::now();
        let renewed = lanes.renew(conn, &moved).await;
        self.metrics.stage(Stage::position, started.elapsed());
        let lost = match renewed {
            Ok(lost) => lost,
            Err(error) => {
                pipeline.unwritten(&moved);
                return Err(error.into());
            }
        };
        let written = pipeline.lowest_floor().map(generation_of);
        if written > self.written_generation {
            self.reclaim_now.notify_one();
        }
        self.written_generation = written;
        if !lost.is_empty() {
            for lane in &lost {
                pipeline.remove_lane(*lane);
            }
            tracing::warn!(outbox = %self.name, lanes = ?lost, "another relay took these lanes; this one stops publishing them");
            self.metrics.set_lanes(lanes.held().len());
        }
        Ok(())
    }

    /// Moves toward this instance's share of the lanes: gives its surplus back once nothing
    /// of it is in flight, and claims lanes that are free or whose owner is gone.
    async fn rebalance(
        &mut self,
        conn: &mut AsyncPgConnection,
        lanes: &mut Lanes,
        pipeline: &mut Pipeline,
    ) -> Result<(), RelayError> {
        let share = lanes.fair_share(conn).await?;
        let held = lanes.held();
        let mut changed = false;
        if held.len() > share {
            let surplus: Vec<i16> =
                held[share..].iter().copied().filter(|lane| pipeline.lane_is_settled(*lane)).collect();
            if !surplus.is_empty() {
                let moved = pipeline.moved_positions();
                lanes.release(conn, &surplus, &moved).await?;
                for lane in &surplus {
                    pipeline.remove_lane(*lane);
                }
                pipeline.unwritten(&moved.into_iter().filter(|(lane, _)| !surplus.contains(lane)).collect::<Vec<_>>());
                changed = true;
            }
        }
        for claimed in lanes.claim(conn, share).await? {
            pipeline.add_lane(claimed.lane, claimed.position);
            changed = true;
        }
        if changed {
            pipeline.look_again();
            let held = lanes.held();
            tracing::info!(outbox = %self.name, lanes = ?held, "this relay's lanes changed");
            self.metrics.set_lanes(held.len());
        }
        Ok(())
    }

    /// Takes the oldest batch in flight, its deliveries answered: its lanes' positions move
    /// over what the broker acknowledged (written at the next renewal).
    async fn settle_oldest(&mut self, pipeline: &mut Pipeline) -> Result<(), RelayError> {
        let Some(mut answered) = pipeline.take_oldest().await else {
            return Ok(());
        };
        crate::hops::settled(std::mem::take(&mut answered.hops), &answered.acknowledged, answered.delivered_in);
        // Acknowledged, its position not yet written: a crash here publishes the batch again.
        // Only a batch the broker took part of is that moment; one it refused entirely (say,
        // before the principal's ACLs reached it) has published nothing.
        if answered.acknowledged_rows().next().is_some() {
            platform::crash::point(crate::AFTER_PUBLISH_BEFORE_POSITION)?;
        }
        self.metrics.stage(Stage::delivery, answered.delivered_in);
        let now = chrono::Utc::now();
        for row in answered.acknowledged_rows() {
            let latency = (now - row.created_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
            self.metrics.published(&row.topic, latency.max(0.0));
        }
        let failures = answered.failures();
        if failures > 0 {
            tracing::warn!(
                outbox = %self.name,
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

/// Why the relay stopped waiting while batches were in flight.
enum Wake<N> {
    Notified(N),
    Answered,
    Renew,
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
