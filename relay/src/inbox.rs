//! The consume loop: each Kafka message is applied in one database transaction together
//! with an inbox row keyed by its event id, and its offset is stored only after that
//! transaction committed. A redelivered or re-published event finds its inbox row and is
//! skipped, so at-least-once delivery becomes exactly-once effect.
//!
//! Error policy:
//! - a database error that may pass (connection lost, serialization failure) is retried with
//!   backoff until it succeeds or shutdown is requested; the offset is not stored meanwhile,
//!   so nothing is lost if the process stops;
//! - a handler's [`HandleError::Permanent`] is tried again a bounded number of times with
//!   exponential backoff, then the event is published to `<topic>.dlq` (see
//!   [`crate::dead_letter`]) and the consumer moves on;
//! - an unreadable message goes to the dead-letter topic at once: parsing the same bytes again
//!   cannot give another answer (decision 0007).
//!
//! The offset of a dead-lettered event is stored only after the broker acknowledged the dead
//! letter, so a poison event is never silently dropped.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use backon::{BackoffBuilder as _, ExponentialBuilder};
use diesel::ExpressionMethods as _;
use diesel::QueryDsl as _;
use diesel::result::DatabaseErrorKind;
use diesel::result::QueryResult;
use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl};
use platform::db::PgPool;
use platform::kafka::GroupConsumer;
use rdkafka::Message as _;
use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::message::OwnedMessage;
use schema::RawEnvelope;
use schema::tables::messaging::inbox;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::dead_letter::DeadLetterQueue;
use crate::metrics::ConsumerMetrics;
use crate::offsets::OffsetTracker;
pub use crate::stats::ConsumerStats;

/// What a service does with one event, inside the transaction that records it in the inbox.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Runs before the transaction; may take its time (the gremlin sleeps here) without
    /// holding a connection or locks.
    async fn before(&self, _event: &RawEnvelope) {}

    async fn handle(&self, conn: &mut AsyncPgConnection, event: &RawEnvelope) -> Result<(), HandleError>;

    /// Runs after the transaction committed, before the offset is stored: the place of the
    /// service's `*.after_commit_before_ack` crash point.
    fn after_commit(&self) -> Result<(), platform::crash::InjectedFault> {
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    #[error("database: {0}")]
    Database(#[from] diesel::result::Error),
    #[error("no database connection: {0}")]
    Unavailable(String),
    /// A crash point set to `error`: the transaction rolls back and the event is retried.
    #[error(transparent)]
    Injected(#[from] platform::crash::InjectedFault),
    /// The event can never be applied (unknown type, bad payload, broken invariant).
    #[error("{0}")]
    Permanent(String),
}

impl HandleError {
    /// Constraint violations are deterministic: retrying would fail the same way forever.
    fn is_transient(&self) -> bool {
        match self {
            Self::Permanent(_) => false,
            Self::Database(diesel::result::Error::DatabaseError(kind, _)) => !matches!(
                kind,
                DatabaseErrorKind::UniqueViolation
                    | DatabaseErrorKind::ForeignKeyViolation
                    | DatabaseErrorKind::CheckViolation
                    | DatabaseErrorKind::NotNullViolation
            ),
            // A query that cannot be built or a row that cannot be read fails the same way again.
            Self::Database(
                diesel::result::Error::QueryBuilderError(_)
                | diesel::result::Error::DeserializationError(_)
                | diesel::result::Error::SerializationError(_),
            ) => false,
            Self::Database(_) | Self::Unavailable(_) | Self::Injected(_) => true,
        }
    }
}

/// Where a message came from, recorded in the inbox for forensics.
#[derive(Debug, Clone)]
pub struct Coordinates {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// What happened to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Processed,
    Duplicate,
}

/// Applies `event` once: inbox row and handler in one transaction. A second call with the
/// same event id changes nothing and returns [`Outcome::Duplicate`].
pub async fn apply_once<H: Handler>(
    conn: &mut AsyncPgConnection,
    handler: &H,
    event: &RawEnvelope,
    from: &Coordinates,
) -> Result<Outcome, HandleError> {
    conn.transaction::<_, HandleError, _>(async |conn| {
        let inserted = diesel::insert_into(inbox::table)
            .values((
                inbox::event_id.eq(event.event_id.0),
                inbox::event_type.eq(&event.event_type),
                inbox::topic.eq(&from.topic),
                inbox::kafka_partition.eq(from.partition),
                inbox::kafka_offset.eq(from.offset),
            ))
            .on_conflict_do_nothing()
            .execute(conn)
            .await?;
        if inserted == 0 {
            return Ok(Outcome::Duplicate);
        }
        handler.handle(conn, event).await?;
        Ok(Outcome::Processed)
    })
    .await
}

/// How long a stopping consumer waits for its final commit and close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How many events one consumer handles at once (across all its partitions).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;

/// A Kafka consumer bound to a database and a handler.
///
/// Events are handled concurrently, up to `max_in_flight`, except that the events of one
/// order (one Kafka key) are handled one after the other, in partition order: a slow order
/// delays only itself. Offsets are stored by an [`OffsetTracker`], never past an unfinished
/// event.
pub struct InboxConsumer<H> {
    shared: Arc<Shared<H>>,
    max_in_flight: usize,
    /// What to subscribe to when `run` starts.
    topics: Option<Vec<String>>,
}

struct Shared<H> {
    metrics: Option<ConsumerMetrics>,
    dead_letters: Option<DeadLetterQueue>,
    poison: PoisonPolicy,
    consumer: GroupConsumer,
    pool: PgPool,
    handler: H,
    stats: Arc<ConsumerStats>,
    offsets: Mutex<OffsetTracker>,
    chains: Mutex<HashMap<Vec<u8>, ChainLink>>,
}

impl<H: Handler> InboxConsumer<H> {
    /// A consumer of `topics`, built from `settings` for consumer group `group`.
    pub fn for_topics(
        settings: &platform::config::KafkaSettings,
        group: &str,
        topics: &[&str],
        pool: PgPool,
        handler: H,
    ) -> rdkafka::error::KafkaResult<Self> {
        let consumer = platform::kafka::consumer(settings, group)?;
        let mut this = Self::new(consumer, pool, handler);
        if let Some(shared) = Arc::get_mut(&mut this.shared) {
            shared.dead_letters = Some(DeadLetterQueue::new(settings, group)?);
        }
        this.topics = Some(topics.iter().map(|t| (*t).to_owned()).collect());
        Ok(this)
    }

    /// `consumer` must already be subscribed or assigned.
    pub fn new(consumer: GroupConsumer, pool: PgPool, handler: H) -> Self {
        let shared = Shared {
            metrics: None,
            dead_letters: None,
            poison: PoisonPolicy::default(),
            consumer,
            pool,
            handler,
            stats: Arc::default(),
            offsets: Mutex::default(),
            chains: Mutex::default(),
        };
        Self { shared: Arc::new(shared), max_in_flight: DEFAULT_MAX_IN_FLIGHT, topics: None }
    }

    /// Records events by outcome and lag per partition in `metrics`.
    pub fn with_metrics(mut self, metrics: &platform::metrics::Metrics) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.metrics = Some(ConsumerMetrics::register(metrics));
        }
        self
    }

    /// How often, and how patiently, a permanently failing event is tried before it is
    /// dead-lettered.
    pub fn with_poison_policy(mut self, policy: PoisonPolicy) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.poison = policy;
        }
        self
    }

    pub fn with_max_in_flight(mut self, max_in_flight: usize) -> Self {
        self.max_in_flight = max_in_flight.max(1);
        self
    }

    pub fn stats(&self) -> Arc<ConsumerStats> {
        Arc::clone(&self.shared.stats)
    }

    /// The consumer's view of its group: which partitions this instance owns now.
    pub fn group(&self) -> Arc<platform::kafka::GroupContext> {
        Arc::clone(self.shared.consumer.context())
    }

    /// Consumes until `shutdown`; events in hand are finished first, then the stored offsets
    /// are committed.
    pub async fn run(self, shutdown: CancellationToken) {
        if let Some(topics) = &self.topics {
            let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
            // Topics that do not exist yet are fine: the group assigns their partitions once
            // they appear (the metadata refresh notices them).
            if let Err(error) = self.shared.consumer.subscribe(&topics) {
                tracing::error!(%error, "cannot subscribe");
                return;
            }
        }
        let lag = tokio::spawn(report_lag(Arc::clone(&self.shared), shutdown.clone()));
        let permits = Arc::new(Semaphore::new(self.max_in_flight));
        let mut tasks = JoinSet::new();
        let mut generation = 0u64;
        loop {
            let permit = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                permit = Arc::clone(&permits).acquire_owned() => permit,
            };
            let Ok(permit) = permit else { break };
            let message = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                message = self.shared.consumer.recv() => message,
            };
            let message = match message {
                Ok(message) => message.detach(),
                Err(error) => {
                    tracing::warn!(%error, "kafka consumer error; continuing");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            generation += 1;
            let (previous, done) = self.shared.chain(&message, generation);
            let shared = Arc::clone(&self.shared);
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                if let Some(previous) = previous {
                    let _ = previous.await; // the previous event of this order finished (or was dropped)
                }
                let settled = shared.process(&message, &shutdown).await;
                shared.unchain(&message, generation, settled);
                drop(done);
                drop(permit);
            });
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
        lag.abort();
        let _ = lag.await;
        // The final commit and the consumer's close (leaving the group) wait for the broker.
        // A broker that accepts connections but does not answer (a hung node) would keep the
        // process from ever exiting, so they run on a plain thread, given a few seconds.
        let shared = self.shared;
        let (closed, done) = oneshot::channel();
        std::thread::spawn(move || {
            if let Err(error) = shared.consumer.commit_consumer_state(CommitMode::Sync) {
                // Nothing stored since the last commit, or the broker is gone: the events
                // will be redelivered and recognised as duplicates.
                tracing::info!(%error, "final offset commit did not happen");
            }
            drop(shared);
            let _ = closed.send(());
        });
        if tokio::time::timeout(CLOSE_TIMEOUT, done).await.is_err() {
            tracing::warn!(
                timeout_s = CLOSE_TIMEOUT.as_secs(),
                "the broker did not let the consumer close in time; stopping anyway (uncommitted events are redelivered)"
            );
        }
    }
}

impl<H: Handler> Shared<H> {
    /// Registers `message` as the latest event of its order; returns what it must wait for
    /// and the signal it gives when done.
    fn chain(&self, message: &OwnedMessage, generation: u64) -> (Option<oneshot::Receiver<()>>, oneshot::Sender<()>) {
        lock(&self.offsets).begin(message.topic(), message.partition(), message.offset());
        let (done, finished) = oneshot::channel();
        let key = message.key().unwrap_or_default().to_vec();
        let previous = lock(&self.chains).insert(key, (generation, finished)).map(|(_, rx)| rx);
        (previous, done)
    }

    /// Forgets the order's chain if no later event joined it, and, if the event is `settled`,
    /// stores the offset. An unsettled event (shutdown came first) keeps its partition's
    /// offset from moving past it, so it is redelivered after a restart.
    fn unchain(&self, message: &OwnedMessage, generation: u64, settled: bool) {
        let key = message.key().unwrap_or_default();
        let mut chains = lock(&self.chains);
        if chains.get(key).is_some_and(|(g, _)| *g == generation) {
            chains.remove(key);
        }
        drop(chains);
        if !settled {
            return;
        }
        let safe = lock(&self.offsets).finish(message.topic(), message.partition(), message.offset());
        if let Some(offset) = safe
            && let Err(error) = self.consumer.store_offset(message.topic(), message.partition(), offset)
        {
            // The partition was probably reassigned; its new owner will redeliver, and
            // the inbox recognises what was already applied.
            tracing::debug!(%error, "cannot store offset");
        }
    }

    /// Handles one message to the end: applied, recognised as a duplicate, or dead-lettered.
    /// Returns false if shutdown came first and the message must be delivered again.
    #[tracing::instrument(skip_all, fields(topic = message.topic(), partition = message.partition(), offset = message.offset(), event_id, event_type, order_id, correlation_id))]
    async fn process(&self, message: &OwnedMessage, shutdown: &CancellationToken) -> bool {
        let from =
            Coordinates { topic: message.topic().to_owned(), partition: message.partition(), offset: message.offset() };
        let event = match RawEnvelope::from_slice(message.payload().unwrap_or_default()) {
            Ok(event) => event,
            Err(error) => {
                tracing::error!(%error, "unreadable event");
                return self.dead_letter(message, &format!("unreadable event: {error}"), 1, shutdown).await;
            }
        };
        let span = tracing::Span::current();
        span.record("event_id", tracing::field::display(event.event_id));
        span.record("event_type", event.event_type.as_str());
        span.record("order_id", tracing::field::display(event.aggregate_id));
        span.record("correlation_id", event.correlation_id.as_str());
        self.handler.before(&event).await;

        let mut pauses = self.poison.backoff();
        let mut attempts = 1;
        loop {
            let error = match self.apply_until_decided(&event, &from, shutdown).await {
                Decided::Applied => return true,
                Decided::Interrupted => return false,
                Decided::Permanent(error) => error,
            };
            let Some(pause) = pauses.next() else {
                tracing::error!(%error, attempts, "event cannot be applied; dead-lettering it");
                return self.dead_letter(message, &error.to_string(), attempts, shutdown).await;
            };
            tracing::warn!(%error, attempts, retry_in_ms = pause.as_millis() as u64, "event failed; trying again");
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(pause) => {}
            }
            attempts += 1;
        }
    }

    /// Applies the event, retrying transient failures until it is applied, fails
    /// permanently, or shutdown comes.
    async fn apply_until_decided(
        &self,
        event: &RawEnvelope,
        from: &Coordinates,
        shutdown: &CancellationToken,
    ) -> Decided {
        let mut pauses = platform::retry::dependency_backoff().build();
        loop {
            let result = match self.pool.get().await {
                Ok(mut conn) => apply_once(&mut conn, &self.handler, event, from).await,
                Err(error) => Err(HandleError::Unavailable(error.to_string())),
            };
            let pause = match result {
                Ok(outcome) => {
                    let (counter, name) = match outcome {
                        Outcome::Processed => (&self.stats.processed, "processed"),
                        Outcome::Duplicate => (&self.stats.duplicates, "duplicate"),
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    self.record(&from.topic, name);
                    // One line per event would be most of a busy service's log; the counters
                    // above count them. A redelivery is worth a line.
                    match outcome {
                        Outcome::Processed => tracing::debug!("event handled"),
                        Outcome::Duplicate => tracing::info!("duplicate event: already handled"),
                    }
                    match self.handler.after_commit() {
                        Ok(()) => return Decided::Applied,
                        // The effect is committed but not acknowledged: handle the event
                        // again, as a redelivery would, and the inbox recognises it.
                        Err(fault) => {
                            tracing::warn!(%fault, "acknowledgement failed; handling the event again");
                            continue;
                        }
                    }
                }
                Err(error) if error.is_transient() => {
                    let pause = pauses.next().unwrap_or(Duration::from_secs(5));
                    tracing::warn!(%error, retry_in_ms = pause.as_millis() as u64, "event not applied yet; retrying");
                    pause
                }
                Err(error) => return Decided::Permanent(error),
            };
            tokio::select! {
                () = shutdown.cancelled() => return Decided::Interrupted,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Publishes `message` to its dead-letter topic, retrying until the broker takes it or
    /// shutdown comes (then it is not settled and will be redelivered).
    async fn dead_letter(
        &self,
        message: &OwnedMessage,
        error: &str,
        attempts: usize,
        shutdown: &CancellationToken,
    ) -> bool {
        self.stats.failed.fetch_add(1, Ordering::Relaxed);
        self.record(message.topic(), "failed");
        let Some(queue) = &self.dead_letters else {
            tracing::error!(error, "no dead-letter topic configured; event skipped");
            return true;
        };
        let mut pauses = platform::retry::dependency_backoff().build();
        loop {
            match queue.publish(message, error, attempts).await {
                Ok((partition, offset)) => {
                    self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    self.record(message.topic(), "dead_lettered");
                    tracing::warn!(dlq_partition = partition, dlq_offset = offset, error, "event dead-lettered");
                    return true;
                }
                Err(publish_error) => {
                    let pause = pauses.next().unwrap_or(Duration::from_secs(5));
                    tracing::warn!(%publish_error, retry_in_ms = pause.as_millis() as u64, "cannot publish the dead letter yet");
                    tokio::select! {
                        () = shutdown.cancelled() => return false,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }
}

/// How one attempt at an event ended.
enum Decided {
    Applied,
    Permanent(HandleError),
    Interrupted,
}

/// How a consumer treats an event whose handler fails permanently: `attempts` tries in all,
/// pausing `first_delay` after the first and doubling, then the dead-letter topic.
#[derive(Debug, Clone, Copy)]
pub struct PoisonPolicy {
    pub attempts: usize,
    pub first_delay: Duration,
}

impl Default for PoisonPolicy {
    fn default() -> Self {
        let settings = platform::config::InboxSettings::default();
        Self::from(&settings)
    }
}

impl From<&platform::config::InboxSettings> for PoisonPolicy {
    fn from(settings: &platform::config::InboxSettings) -> Self {
        Self {
            attempts: settings.dead_letter_attempts.max(1),
            first_delay: Duration::from_millis(settings.retry_first_delay_ms),
        }
    }
}

impl PoisonPolicy {
    /// The pauses between attempts: one fewer than the attempts.
    fn backoff(&self) -> impl Iterator<Item = Duration> {
        ExponentialBuilder::default()
            .with_min_delay(self.first_delay)
            .with_max_delay(self.first_delay * 16)
            .with_max_times(self.attempts - 1)
            .build()
    }
}

impl<H> Shared<H> {
    fn record(&self, topic: &str, outcome: &'static str) {
        if let Some(metrics) = &self.metrics {
            metrics.event(topic, outcome);
        }
    }
}

/// Every few seconds, sets `consumer_lag_messages` for each assigned partition: the high
/// watermark minus the next offset this consumer will read.
async fn report_lag<H: Send + Sync + 'static>(shared: Arc<Shared<H>>, shutdown: CancellationToken) {
    if shared.metrics.is_none() {
        return;
    }
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        let shared = Arc::clone(&shared);
        let _ = tokio::task::spawn_blocking(move || {
            let Ok(positions) = shared.consumer.position() else { return };
            for element in positions.elements() {
                let Ok((_, high)) =
                    shared.consumer.fetch_watermarks(element.topic(), element.partition(), Duration::from_secs(1))
                else {
                    continue;
                };
                if let (Some(position), Some(metrics)) = (element.offset().to_raw(), &shared.metrics) {
                    metrics.lag(element.topic(), element.partition(), (high - position).max(0));
                }
            }
        })
        .await;
    }
}

/// Per order key: which task is the latest of its chain (by generation), and the signal it
/// gives when done, which the next event of the same order awaits.
type ChainLink = (u64, oneshot::Receiver<()>);

/// A poisoned lock only means another task panicked mid-update of plain bookkeeping; the
/// data is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Deletes inbox rows received more than `keep` ago; returns how many. The window must be
/// longer than the topics' retention (7 days by default, see kafka-init): an event older than
/// the retention can no longer be redelivered, so its inbox row has nothing left to guard.
pub async fn purge(conn: &mut AsyncPgConnection, keep: Duration) -> QueryResult<usize> {
    let cutoff = chrono::Utc::now() - chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
    diesel::delete(inbox::table.filter(inbox::received_at.lt(cutoff))).execute(conn).await
}

/// Purges the inbox every `every`, keeping `keep`, until shutdown.
pub async fn purge_periodically(pool: PgPool, keep: Duration, every: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match pool.get().await {
            Ok(mut conn) => match purge(&mut conn, keep).await {
                Ok(0) => {}
                Ok(purged) => tracing::info!(purged, "old inbox rows purged"),
                Err(error) => tracing::warn!(%error, "inbox purge failed; will try again"),
            },
            Err(error) => tracing::warn!(%error, "inbox purge skipped: no connection"),
        }
    }
}
