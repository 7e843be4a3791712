//! Forgetting old inbox rows. The window must be longer than the topics' retention (7 days by
//! default, see kafka-init): an event older than the retention can no longer be redelivered,
//! so its inbox row has nothing left to guard.

use std::time::Duration;

use diesel::ExpressionMethods as _;
use diesel::QueryDsl as _;
use diesel::result::QueryResult;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use platform::db::PgPool;
use schema::tables::messaging::inbox;
use tokio_util::sync::CancellationToken;

use crate::settings::InboxSettings;

/// Deletes inbox rows received more than `keep` ago; returns how many.
pub async fn purge(conn: &mut AsyncPgConnection, keep: Duration) -> QueryResult<usize> {
    let cutoff = chrono::Utc::now() - chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
    diesel::delete(inbox::table.filter(inbox::received_at.lt(cutoff))).execute(conn).await
}

/// Purges the inbox as `settings` say (every `purge_every_secs`, keeping `keep_hours`) until
/// shutdown. A failed purge is tried again at the next turn: nothing depends on it but the
/// table's size.
pub fn purge_periodically(
    pool: PgPool,
    settings: &InboxSettings,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    let keep = Duration::from_secs(settings.keep_hours * 3600);
    let every = Duration::from_secs(settings.purge_every_secs);
    async move {
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
}
