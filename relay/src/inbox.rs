//! The consume loop: each Kafka message is applied in one database transaction together
//! with an inbox row keyed by its event id, and its offset is stored only after that
//! transaction committed. A redelivered or re-published event finds its inbox row and is
//! skipped, so at-least-once delivery becomes exactly-once effect.
//!
//! Error policy:
//! - an unreadable message, or a handler's [`HandleError::Permanent`], can never succeed:
//!   it is logged with its coordinates, counted as failed, and skipped;
//! - a database error that may pass (connection lost, serialization failure) is retried with
//!   backoff until it succeeds or shutdown is requested; the offset is not stored meanwhile,
//!   so nothing is lost if the process stops.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use diesel::ExpressionMethods as _;
use diesel::result::DatabaseErrorKind;
use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl};
use platform::db::PgPool;
use rdkafka::Message as _;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use schema::RawEnvelope;
use schema::tables::messaging::inbox;
use tokio_util::sync::CancellationToken;

pub use crate::stats::ConsumerStats;

/// What a service does with one event, inside the transaction that records it in the inbox.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    async fn handle(&self, conn: &mut AsyncPgConnection, event: &RawEnvelope) -> Result<(), HandleError>;
}

#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    #[error("database: {0}")]
    Database(#[from] diesel::result::Error),
    #[error("no database connection: {0}")]
    Unavailable(String),
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
            Self::Database(_) | Self::Unavailable(_) => true,
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

/// A Kafka consumer bound to a database and a handler.
pub struct InboxConsumer<H> {
    consumer: StreamConsumer,
    pool: PgPool,
    handler: H,
    stats: Arc<ConsumerStats>,
}

impl<H: Handler> InboxConsumer<H> {
    /// `consumer` must already be subscribed to its topics.
    pub fn new(consumer: StreamConsumer, pool: PgPool, handler: H) -> Self {
        Self { consumer, pool, handler, stats: Arc::default() }
    }

    pub fn stats(&self) -> Arc<ConsumerStats> {
        Arc::clone(&self.stats)
    }

    /// Consumes until `shutdown`; the message in hand is finished first, then the stored
    /// offsets are committed.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let message = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                message = self.consumer.recv() => message,
            };
            match message {
                Ok(message) => self.process(&message, &shutdown).await,
                Err(error) => {
                    tracing::warn!(%error, "kafka consumer error; continuing");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        if let Err(error) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            // Nothing stored since the last commit, or the broker is gone: the events
            // will be redelivered and recognised as duplicates.
            tracing::info!(%error, "final offset commit did not happen");
        }
    }

    #[tracing::instrument(skip_all, fields(topic = message.topic(), partition = message.partition(), offset = message.offset(), event_id, event_type, order_id, correlation_id))]
    async fn process(&self, message: &BorrowedMessage<'_>, shutdown: &CancellationToken) {
        let from =
            Coordinates { topic: message.topic().to_owned(), partition: message.partition(), offset: message.offset() };
        match RawEnvelope::from_slice(message.payload().unwrap_or_default()) {
            Ok(event) => {
                let span = tracing::Span::current();
                span.record("event_id", tracing::field::display(event.event_id));
                span.record("event_type", event.event_type.as_str());
                span.record("order_id", tracing::field::display(event.aggregate_id));
                span.record("correlation_id", event.correlation_id.as_str());
                if !self.apply_with_retry(&event, &from, shutdown).await {
                    return; // shutting down mid-retry: leave the offset, it will be redelivered
                }
            }
            Err(error) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%error, "unreadable event skipped");
            }
        }
        if let Err(error) = self.consumer.store_offset_from_message(message) {
            tracing::warn!(%error, "cannot store offset; the event may be redelivered");
        }
    }

    /// Returns false if shutdown interrupted a retry before the event was applied.
    async fn apply_with_retry(&self, event: &RawEnvelope, from: &Coordinates, shutdown: &CancellationToken) -> bool {
        let mut delay = Duration::from_millis(100);
        loop {
            let result = match self.pool.get().await {
                Ok(mut conn) => apply_once(&mut conn, &self.handler, event, from).await,
                Err(error) => Err(HandleError::Unavailable(error.to_string())),
            };
            match result {
                Ok(Outcome::Processed) => {
                    self.stats.processed.fetch_add(1, Ordering::Relaxed);
                    tracing::info!("event processed");
                    return true;
                }
                Ok(Outcome::Duplicate) => {
                    self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                    tracing::info!("duplicate event skipped");
                    return true;
                }
                Err(error) if error.is_transient() => {
                    tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "event not applied yet; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return false,
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(error) => {
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(%error, "event cannot be applied; skipped");
                    return true;
                }
            }
        }
    }
}
