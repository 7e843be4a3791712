//! The notifications database: whose each order is, and the messages owed and sent.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::tables::{customer_orders, notifications};

// Orders and their messages meet on order_id (no foreign key: a decision may come first).
diesel::joinable!(notifications -> customer_orders (order_id));

/// The outcomes a customer is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Confirmed,
    Rejected,
    Cancelled,
    Shipped,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Confirmed => "CONFIRMED",
            Self::Rejected => "REJECTED",
            Self::Cancelled => "CANCELLED",
            Self::Shipped => "SHIPPED",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Confirmed, Self::Rejected, Self::Cancelled, Self::Shipped].into_iter().find(|k| k.as_str() == text)
    }
}

/// The `Message-ID` of the message owed for event `event_id`: the same for every attempt.
pub fn message_id(event_id: Uuid) -> String {
    format!("<{event_id}@notifications.order-system>")
}

/// Records whose order `order_id` is; a second record of it changes nothing.
pub async fn remember_customer(conn: &mut AsyncPgConnection, order_id: Uuid, customer_id: &str) -> QueryResult<()> {
    diesel::insert_into(customer_orders::table)
        .values((customer_orders::order_id.eq(order_id), customer_orders::customer_id.eq(customer_id)))
        .on_conflict_do_nothing()
        .execute(conn)
        .await
        .map(drop)
}

/// Owes the customer a message about `order_id`'s outcome, decided by event `event_id`.
/// Returns false when that outcome of that order is owed already.
pub async fn owe(
    conn: &mut AsyncPgConnection,
    event_id: Uuid,
    order_id: Uuid,
    kind: Kind,
    detail: Option<&str>,
) -> QueryResult<bool> {
    let inserted = diesel_async::methods::ExecuteDsl::execute(owed(event_id, order_id, kind, detail), conn).await?;
    Ok(inserted == 1)
}

fn owed<'a>(
    event_id: Uuid,
    order_id: Uuid,
    kind: Kind,
    detail: Option<&'a str>,
) -> impl diesel_async::methods::ExecuteDsl<AsyncPgConnection> + QueryFragment<Pg> + Send + 'a {
    diesel::insert_into(notifications::table)
        .values((
            notifications::id.eq(event_id),
            notifications::order_id.eq(order_id),
            notifications::kind.eq(kind.as_str()),
            notifications::detail.eq(detail),
            notifications::message_id.eq(message_id(event_id)),
        ))
        // The columns of the unique constraint, not its name: Diesel prepares a statement that
        // names a constraint afresh on every call.
        .on_conflict((notifications::order_id, notifications::kind))
        .do_nothing()
}

/// A message that is due, with the customer it goes to.
#[derive(Debug, Clone, Queryable)]
pub struct Due {
    pub id: Uuid,
    pub order_id: Uuid,
    pub kind: String,
    pub detail: Option<String>,
    pub message_id: String,
    pub attempts: i32,
    pub customer_id: String,
}

/// Takes the oldest due message and locks it for this transaction; one being sent by
/// another sender is skipped. A message whose order's placement has not been read yet
/// waits: its customer is not known.
pub async fn claim_due(conn: &mut AsyncPgConnection) -> QueryResult<Option<Due>> {
    notifications::table
        .inner_join(customer_orders::table)
        .filter(notifications::sent_at.is_null())
        .filter(notifications::failed_at.is_null())
        .filter(notifications::next_attempt_at.le(diesel::dsl::now))
        .order(notifications::next_attempt_at)
        .select((
            notifications::id,
            notifications::order_id,
            notifications::kind,
            notifications::detail,
            notifications::message_id,
            notifications::attempts,
            customer_orders::customer_id,
        ))
        .limit(1)
        .for_update()
        .skip_locked()
        .first(conn)
        .await
        .optional()
}

pub async fn mark_sent(conn: &mut AsyncPgConnection, id: Uuid, recipient: &str) -> QueryResult<()> {
    Attempted::Sent { id, recipient }.execute(conn).await.map(drop)
}

/// Records a failed attempt: tried again at `retry_at`, or given up when `retry_at` is `None`.
pub async fn mark_failed(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    error: &str,
    retry_at: Option<DateTime<Utc>>,
) -> QueryResult<()> {
    let failed_at = retry_at.is_none().then(Utc::now);
    let next_attempt_at = retry_at.unwrap_or_else(Utc::now);
    Attempted::Failed { id, error, next_attempt_at, failed_at }.execute(conn).await.map(drop)
}

/// What an attempt to send a message did to its row. Written out rather than with
/// `diesel::update`: Diesel prepares none of its own `UPDATE`s for reuse (a changeset may
/// leave columns out), and one of these runs for every message sent.
enum Attempted<'a> {
    Sent { id: Uuid, recipient: &'a str },
    Failed { id: Uuid, error: &'a str, next_attempt_at: DateTime<Utc>, failed_at: Option<DateTime<Utc>> },
}

impl QueryId for Attempted<'_> {
    type QueryId = ();
    // Two texts, one per outcome: cached by the text.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl QueryFragment<Pg> for Attempted<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let id = match self {
            Self::Sent { id, recipient } => {
                out.push_sql("UPDATE notifications SET sent_at = now(), recipient = ");
                out.push_bind_param::<sql_types::Text, _>(recipient)?;
                id
            }
            Self::Failed { id, error, next_attempt_at, failed_at } => {
                out.push_sql("UPDATE notifications SET last_error = ");
                out.push_bind_param::<sql_types::Text, _>(error)?;
                out.push_sql(", next_attempt_at = ");
                out.push_bind_param::<sql_types::Timestamptz, _>(next_attempt_at)?;
                out.push_sql(", failed_at = ");
                out.push_bind_param::<sql_types::Nullable<sql_types::Timestamptz>, _>(failed_at)?;
                id
            }
        };
        out.push_sql(", attempts = attempts + 1 WHERE id = ");
        out.push_bind_param::<sql_types::Uuid, _>(id)?;
        Ok(())
    }
}

/// How many messages are owed and not given up (waiting for their customer included).
pub async fn backlog(conn: &mut AsyncPgConnection) -> QueryResult<i64> {
    notifications::table
        .filter(notifications::sent_at.is_null())
        .filter(notifications::failed_at.is_null())
        .count()
        .get_result(conn)
        .await
}

/// The customer of `order_id`, if its placement has been read.
pub async fn customer_of(conn: &mut AsyncPgConnection, order_id: Uuid) -> QueryResult<Option<String>> {
    customer_orders::table.find(order_id).select(customer_orders::customer_id).first(conn).await.optional()
}

/// One message about an order, as `GET /notifications` shows it.
#[derive(Debug, Clone, Serialize, Queryable, Selectable, ToSchema)]
#[diesel(table_name = notifications, check_for_backend(diesel::pg::Pg))]
pub struct NotificationView {
    pub id: Uuid,
    pub order_id: Uuid,
    /// `CONFIRMED`, `REJECTED` or `CANCELLED`.
    pub kind: String,
    /// Why the order was rejected.
    pub detail: Option<String>,
    pub message_id: String,
    pub created_at: DateTime<Utc>,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub recipient: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
}

/// Every message about `order_id`, oldest first.
pub async fn for_order(conn: &mut AsyncPgConnection, order_id: Uuid) -> QueryResult<Vec<NotificationView>> {
    notifications::table
        .filter(notifications::order_id.eq(order_id))
        .order(notifications::created_at)
        .select(NotificationView::as_select())
        .load(conn)
        .await
}

#[cfg(test)]
mod tests {
    use diesel::pg::Pg;
    use diesel::query_builder::QueryFragment;

    use super::*;

    /// Postgres parses and plans a statement Diesel does not keep prepared on every call;
    /// the statements written for every message are kept.
    fn assert_prepared(statement: impl QueryFragment<Pg>) {
        let sql = diesel::debug_query::<Pg, _>(&statement).to_string();
        assert!(statement.is_safe_to_cache_prepared(&Pg).unwrap(), "prepared afresh on every call: {sql}");
    }

    #[test]
    fn the_statements_run_for_every_message_stay_prepared() {
        let id = Uuid::nil();
        assert_prepared(owed(id, id, Kind::Rejected, Some("out of stock")));
        assert_prepared(Attempted::Sent { id, recipient: "a@example.com" });
        let failed_at = Some(Utc::now());
        assert_prepared(Attempted::Failed { id, error: "refused", next_attempt_at: Utc::now(), failed_at });
    }
}
