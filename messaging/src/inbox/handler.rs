//! What a service plugs into the inbox: a [`Handler`] for its events, the errors it may
//! answer, and [`apply_once`], which records an event in the inbox and applies it in one
//! transaction.
//!
//! One room: the error classification (what is retried, what is dead-lettered, what the
//! customer is told) belongs with the handler contract it classifies; much of it is tests.

use crate::tables::inbox_log;
use async_trait::async_trait;
use diesel::ExpressionMethods as _;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl};
use schema::RawEnvelope;
use tracing::Instrument as _;

/// What a service does with one event, inside the transaction that records it in the inbox.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Runs before the transaction; may take its time (the gremlin sleeps here) without
    /// holding a connection or locks.
    async fn before(&self, _event: &RawEnvelope) {}

    /// Applies `event`. What must happen only once the transaction has committed (counting an
    /// order as finished, say) goes in the returned [`Committed`]: the transaction may still
    /// roll back after this returns, e.g. with a batch that another event fails (`batch`).
    async fn handle(&self, conn: &mut AsyncPgConnection, event: &RawEnvelope) -> Result<Committed, HandleError>;

    /// Runs first in the transaction of a batch of several events (`batch`), with the events
    /// in the order they will be applied. Several instances of a service apply batches at the
    /// same time, each from its own partitions: two batches that update the same shared rows
    /// (inventory's stock rows) in opposite orders would each wait for the other until their
    /// lock timeout rolled them back. A handler whose events update shared rows locks them
    /// here, in one order every instance uses. Events it cannot read are its `handle`'s to
    /// refuse; here they lock nothing. Nothing by default.
    async fn lock_for_batch(&self, _conn: &mut AsyncPgConnection, _events: &[&RawEnvelope]) -> Result<(), HandleError> {
        Ok(())
    }

    /// Whether this build reads `event` at all: false for an event from a newer build (a
    /// type the topic does not carry yet, or a newer schema version of one it does). Such an
    /// event is dead-lettered like any other, but neither recorded in the inbox nor answered
    /// by [`Handler::refused`]: it ends nothing, and a redrive after this service's upgrade
    /// applies it (decision 0017).
    fn understands(&self, _event: &RawEnvelope) -> bool {
        true
    }

    /// Runs when `event` was dead-lettered, inside the transaction that records its id in the
    /// inbox (so a later redrive of it changes nothing): the place to end what the event was
    /// about, e.g. answer "rejected: unprocessable" for its order (decision 0011). `reason`
    /// says why the event was refused (its first 300 characters). Not called for messages that are not envelopes; when
    /// the refusal was of a value in the envelope, `event` is its [`RawEnvelope::identity`]
    /// (ids and type, payload `null`).
    async fn refused(
        &self,
        _conn: &mut AsyncPgConnection,
        _event: &RawEnvelope,
        _reason: &str,
    ) -> Result<(), HandleError> {
        Ok(())
    }

    /// Runs after `event`'s transaction committed, before its offset is stored: the place of
    /// the service's `*.after_commit_before_ack` crash points.
    fn after_commit(&self, _event: &RawEnvelope) -> Result<(), platform::crash::InjectedFault> {
        Ok(())
    }
}

/// What a [`Handler`] does once the transaction that applied an event has committed; nothing
/// if it rolled back. Counting and logging what an event changed belong here: an event whose
/// batch rolls back is applied again, alone, and would be counted or logged twice. It runs in
/// the event's span.
#[must_use]
pub struct Committed(Option<Box<dyn FnOnce() + Send>>);

impl Committed {
    /// Nothing to do after the commit.
    pub fn nothing() -> Self {
        Self(None)
    }

    /// `then`, once committed.
    pub fn then(then: impl FnOnce() + Send + 'static) -> Self {
        Self(Some(Box::new(then)))
    }

    pub(crate) fn run(self) {
        if let Some(then) = self.0 {
            then();
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    #[error("database: {0}")]
    Database(#[from] DieselError),
    /// No connection, or a commit no synchronous standby holds yet: waited for, never
    /// dead-lettered.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A crash point set to `error`: the transaction rolls back and the event is retried.
    #[error(transparent)]
    Injected(#[from] platform::crash::InjectedFault),
    /// The event can never be applied (unknown type, bad payload, broken invariant).
    #[error("{0}")]
    Permanent(String),
}

/// Why an event failed, which decides what happens to it next (decision 0011).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The database is unreachable or busy (a lost connection, a restart, a serialization
    /// failure, a deadlock, a lock or statement timeout): nothing is wrong with the event.
    /// Retried with backoff for as long as it lasts, never dead-lettered.
    Busy,
    /// The event's content is refused (a value the database rejects, a broken constraint, a
    /// payload that does not decode): trying again gives the same answer. Dead-lettered at once.
    Refused,
    /// Anything else: tried a bounded number of times, then dead-lettered with the reason.
    Unknown,
}

/// Postgres message openings of data exceptions (SQLSTATE class 22): the value is refused,
/// whenever it is tried.
const REFUSED: &[&str] = &[
    "invalid byte sequence",
    "invalid input syntax",
    "invalid input value",
    "value too long",
    "value out of range",
    "integer out of range",
    "bigint out of range",
    "smallint out of range",
    "numeric field overflow",
    "unsupported unicode escape sequence",
    "character with byte sequence",
    "date/time field value out of range",
    "division by zero",
    "array size exceeds",
    "string is too long",
];

/// What an order's answer says when its event failed in the database: the database's own text
/// (a constraint's or a table's name, a value) stays in the dead letter and the log, for the
/// operators; customers read the order's history and their e-mail.
pub const FAILED_IN_THE_DATABASE: &str = "it could not be stored; the details are with our operators";

impl HandleError {
    /// Why the event was refused, in words fit for the order's history and the customer's
    /// e-mail: the event's own fault in our words, or [`FAILED_IN_THE_DATABASE`].
    pub fn public_reason(&self) -> String {
        match self {
            Self::Permanent(reason) => reason.clone(),
            Self::Database(_) | Self::Unavailable(_) | Self::Injected(_) => FAILED_IN_THE_DATABASE.to_owned(),
        }
    }

    /// What kind of failure this is: the one place that decides between retrying for ever,
    /// dead-lettering at once, and trying a few times.
    pub fn failure(&self) -> Failure {
        use DatabaseErrorKind as Kind;
        match self {
            Self::Unavailable(_) | Self::Injected(_) => Failure::Busy,
            Self::Permanent(_) => Failure::Refused,
            Self::Database(error) if platform::db::is_transient(error) => Failure::Busy,
            Self::Database(DieselError::DatabaseError(kind, info)) => match kind {
                Kind::UniqueViolation
                | Kind::ForeignKeyViolation
                | Kind::CheckViolation
                | Kind::NotNullViolation
                | Kind::RestrictViolation
                | Kind::ExclusionViolation => Failure::Refused,
                _ => by_message(info.message()),
            },
            Self::Database(
                DieselError::QueryBuilderError(_)
                | DieselError::DeserializationError(_)
                | DieselError::SerializationError(_)
                | DieselError::InvalidCString(_),
            ) => Failure::Refused,
            Self::Database(_) => Failure::Unknown,
        }
    }
}

/// A data exception is refused whenever it is tried; anything else unrecognised is tried a
/// few times.
fn by_message(message: &str) -> Failure {
    let message = message.to_ascii_lowercase();
    if REFUSED.iter().any(|opening| message.starts_with(opening)) { Failure::Refused } else { Failure::Unknown }
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

impl Outcome {
    /// The inbox's rule: the event's id is recorded in the transaction that would apply it; if
    /// the record is new, the event is applied there; if the id was recorded before, nothing
    /// is done. [`apply_once`] and [`refuse_once`] follow it, and so does the protocol model
    /// (`model/`).
    pub fn of_recording(newly_recorded: bool) -> Self {
        if newly_recorded { Self::Processed } else { Self::Duplicate }
    }
}

/// Records a dead-lettered `event` in the inbox and lets the handler answer it, in one
/// transaction; [`Outcome::Duplicate`] if its id was already there (then nothing is done).
pub async fn refuse_once<H: Handler>(
    conn: &mut AsyncPgConnection,
    handler: &H,
    event: &RawEnvelope,
    from: &Coordinates,
    reason: &str,
) -> Result<Outcome, HandleError> {
    conn.transaction::<_, HandleError, _>(async |conn| {
        let outcome = Outcome::of_recording(remember(conn, event, from).await?);
        if outcome == Outcome::Processed {
            handler.refused(conn, event, reason).await?;
        }
        Ok(outcome)
    })
    .await
}

diesel::define_sql_function! {
    /// The partition of the inbox log an event id is remembered in (messaging migration
    /// 000010): a function of the id alone, so one probe of one index finds it.
    fn inbox_slot(event_id: diesel::sql_types::Uuid) -> diesel::sql_types::SmallInt;
}

/// Inserts the event's inbox row; false if it was already there.
#[tracing::instrument(name = "inbox.dedup", skip_all)]
async fn remember(conn: &mut AsyncPgConnection, event: &RawEnvelope, from: &Coordinates) -> Result<bool, HandleError> {
    let inserted = diesel::insert_into(inbox_log::table)
        .values((
            inbox_log::event_id.eq(event.event_id.0),
            inbox_log::slot.eq(inbox_slot(event.event_id.0)),
            inbox_log::event_type.eq(&event.event_type),
            inbox_log::topic.eq(&from.topic),
            inbox_log::kafka_partition.eq(from.partition),
            inbox_log::kafka_offset.eq(from.offset),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(inserted == 1)
}

/// Applies `event` once: inbox row and handler in one transaction. A second call with the
/// same event id changes nothing and returns [`Outcome::Duplicate`].
pub async fn apply_once<H: Handler>(
    conn: &mut AsyncPgConnection,
    handler: &H,
    event: &RawEnvelope,
    from: &Coordinates,
) -> Result<Outcome, HandleError> {
    let (outcome, committed) = conn
        .transaction(async |conn| record_and_handle(conn, handler, event, from).await)
        .instrument(tracing::info_span!("inbox.transaction"))
        .await?;
    committed.run();
    Ok(outcome)
}

/// The inside of [`apply_once`]'s transaction, which a batch (`batch`) runs for each of its
/// events in one.
pub(super) async fn record_and_handle<H: Handler>(
    conn: &mut AsyncPgConnection,
    handler: &H,
    event: &RawEnvelope,
    from: &Coordinates,
) -> Result<(Outcome, Committed), HandleError> {
    let outcome = Outcome::of_recording(remember(conn, event, from).await?);
    let committed = match outcome {
        Outcome::Processed => {
            let span = tracing::info_span!("handle", otel.name = format!("handle {}", event.event_type));
            handler.handle(conn, event).instrument(span).await?
        }
        Outcome::Duplicate => Committed::nothing(),
    };
    Ok((outcome, committed))
}

#[cfg(test)]
mod tests {
    use diesel::result::{DatabaseErrorKind, Error as DieselError};

    use super::{Failure, HandleError};

    fn database(kind: DatabaseErrorKind) -> HandleError {
        with_message(kind, "planted")
    }

    fn with_message(kind: DatabaseErrorKind, message: &'static str) -> HandleError {
        HandleError::Database(platform::db::planted_error(kind, message))
    }

    #[test]
    fn an_unreachable_or_busy_database_is_waited_for() {
        for kind in [
            DatabaseErrorKind::SerializationFailure,
            DatabaseErrorKind::ClosedConnection,
            DatabaseErrorKind::UnableToSendCommand,
            DatabaseErrorKind::ReadOnlyTransaction,
        ] {
            assert_eq!(database(kind).failure(), Failure::Busy, "{kind:?}");
        }
        for message in [
            "deadlock detected",
            "canceling statement due to statement timeout",
            "canceling statement due to lock timeout",
            "could not obtain lock on row in relation \"products\"",
            "terminating connection due to administrator command",
            "the database system is shutting down",
            "sorry, too many clients already",
        ] {
            assert_eq!(with_message(DatabaseErrorKind::Unknown, message).failure(), Failure::Busy, "{message}");
        }
        assert_eq!(HandleError::Unavailable("pool timed out".into()).failure(), Failure::Busy);
        assert_eq!(HandleError::Injected(platform::crash::InjectedFault("test")).failure(), Failure::Busy);
        assert_eq!(HandleError::Database(DieselError::BrokenTransactionManager).failure(), Failure::Busy);
    }

    #[test]
    fn content_the_database_refuses_is_refused_at_once() {
        for kind in [
            DatabaseErrorKind::UniqueViolation,
            DatabaseErrorKind::ForeignKeyViolation,
            DatabaseErrorKind::CheckViolation,
            DatabaseErrorKind::NotNullViolation,
            DatabaseErrorKind::RestrictViolation,
            DatabaseErrorKind::ExclusionViolation,
        ] {
            assert_eq!(database(kind).failure(), Failure::Refused, "{kind:?}");
        }
        for message in [
            "invalid byte sequence for encoding \"UTF8\": 0x00",
            "value too long for type character varying(32)",
            "integer out of range",
            "invalid input syntax for type uuid: \"x\"",
            "unsupported Unicode escape sequence",
        ] {
            assert_eq!(with_message(DatabaseErrorKind::Unknown, message).failure(), Failure::Refused, "{message}");
        }
        assert_eq!(HandleError::Permanent("unknown event type".into()).failure(), Failure::Refused);
        assert_eq!(HandleError::Permanent("missing field `lines`".into()).public_reason(), "missing field `lines`");
        let constraint = with_message(DatabaseErrorKind::Unknown, "value too long for type character varying(64)");
        assert_eq!(constraint.public_reason(), super::FAILED_IN_THE_DATABASE, "no database text for customers");
        assert_eq!(HandleError::Database(DieselError::QueryBuilderError("empty".into())).failure(), Failure::Refused);
        assert_eq!(
            HandleError::Database(DieselError::DeserializationError("bad row".into())).failure(),
            Failure::Refused
        );
    }

    #[test]
    fn anything_else_is_unknown_and_tried_a_bounded_number_of_times() {
        assert_eq!(with_message(DatabaseErrorKind::Unknown, "planted").failure(), Failure::Unknown);
        assert_eq!(with_message(DatabaseErrorKind::Unknown, "interblocage détecté").failure(), Failure::Unknown);
        assert_eq!(HandleError::Database(DieselError::NotFound).failure(), Failure::Unknown);
    }
}
