//! What a service plugs into the inbox: a [`Handler`] for its events, the errors it may
//! answer, and [`apply_once`], which records an event in the inbox and applies it in one
//! transaction.

use async_trait::async_trait;
use diesel::ExpressionMethods as _;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl};
use schema::RawEnvelope;
use schema::tables::messaging::inbox;

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
    Database(#[from] DieselError),
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
    /// Whether trying the same event again may succeed. Constraint violations and queries
    /// that cannot be built or read are deterministic: they would fail the same way forever.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Permanent(_) => false,
            Self::Database(DieselError::DatabaseError(kind, _)) => !matches!(
                kind,
                DatabaseErrorKind::UniqueViolation
                    | DatabaseErrorKind::ForeignKeyViolation
                    | DatabaseErrorKind::CheckViolation
                    | DatabaseErrorKind::NotNullViolation
            ),
            Self::Database(
                DieselError::QueryBuilderError(_)
                | DieselError::DeserializationError(_)
                | DieselError::SerializationError(_),
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

#[cfg(test)]
mod tests {
    use diesel::result::{DatabaseErrorInformation, DatabaseErrorKind, Error as DieselError};

    use super::HandleError;

    #[derive(Debug)]
    struct Info;

    impl DatabaseErrorInformation for Info {
        fn message(&self) -> &str {
            "planted"
        }
        fn details(&self) -> Option<&str> {
            None
        }
        fn hint(&self) -> Option<&str> {
            None
        }
        fn table_name(&self) -> Option<&str> {
            None
        }
        fn column_name(&self) -> Option<&str> {
            None
        }
        fn constraint_name(&self) -> Option<&str> {
            None
        }
        fn statement_position(&self) -> Option<i32> {
            None
        }
    }

    fn database(kind: DatabaseErrorKind) -> HandleError {
        HandleError::Database(DieselError::DatabaseError(kind, Box::new(Info)))
    }

    #[test]
    fn failures_that_may_pass_are_retried() {
        for kind in [
            DatabaseErrorKind::SerializationFailure,
            DatabaseErrorKind::ClosedConnection,
            DatabaseErrorKind::UnableToSendCommand,
        ] {
            assert!(database(kind).is_transient(), "{kind:?}");
        }
        assert!(HandleError::Unavailable("pool timed out".into()).is_transient());
        assert!(HandleError::Injected(platform::crash::InjectedFault("test")).is_transient());
        assert!(HandleError::Database(DieselError::BrokenTransactionManager).is_transient());
    }

    #[test]
    fn failures_that_repeat_are_not_retried() {
        for kind in [
            DatabaseErrorKind::UniqueViolation,
            DatabaseErrorKind::ForeignKeyViolation,
            DatabaseErrorKind::CheckViolation,
            DatabaseErrorKind::NotNullViolation,
        ] {
            assert!(!database(kind).is_transient(), "{kind:?}");
        }
        assert!(!HandleError::Permanent("unknown event type".into()).is_transient());
        assert!(!HandleError::Database(DieselError::QueryBuilderError("empty".into())).is_transient());
        assert!(!HandleError::Database(DieselError::DeserializationError("bad row".into())).is_transient());
    }
}
