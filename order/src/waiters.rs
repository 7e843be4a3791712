//! Requests waiting for an order's outcome. One connection per process LISTENs on
//! `order_status` (notified by a trigger when a status changes, on commit) and wakes the
//! requests registered for that order. A request registers *before* it writes or reads the
//! order, so a change that commits in between still wakes it.
//!
//! If the listening connection is down, waiters fall back to polling the database every
//! [`POLL_WHEN_DEAF`], so the wait stays correct, only costlier.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use diesel_async::{AsyncConnection as _, AsyncPgConnection};
use futures::StreamExt as _;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How often a waiter re-reads the order while the listener is disconnected.
pub const POLL_WHEN_DEAF: Duration = Duration::from_millis(200);

#[derive(Debug, Default)]
pub struct Waiters {
    waiting: Mutex<HashMap<Uuid, Vec<oneshot::Sender<()>>>>,
    listening: AtomicBool,
}

/// A registration; dropping it forgets the waiter.
pub struct Waiter {
    order_id: Uuid,
    woken: Option<oneshot::Receiver<()>>,
    waiters: Arc<Waiters>,
}

impl Waiters {
    /// Registers interest in `order_id`'s next status change.
    pub fn register(self: &Arc<Self>, order_id: Uuid) -> Waiter {
        let (tx, rx) = oneshot::channel();
        self.lock().entry(order_id).or_default().push(tx);
        Waiter { order_id, woken: Some(rx), waiters: Arc::clone(self) }
    }

    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Relaxed)
    }

    fn wake(&self, order_id: Uuid) {
        for waiter in self.lock().remove(&order_id).unwrap_or_default() {
            let _ = waiter.send(());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Vec<oneshot::Sender<()>>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Listens until shutdown, reconnecting after any error.
    pub async fn listen(self: Arc<Self>, database_url: String, shutdown: CancellationToken) {
        let mut backoff = platform::retry::Backoff::default();
        while !shutdown.is_cancelled() {
            match self.listen_once(&database_url, &shutdown).await {
                Ok(()) => break,
                Err(error) => {
                    self.listening.store(false, Ordering::Relaxed);
                    // Anyone waiting may have missed a notification: let them look again.
                    let everyone: Vec<Uuid> = self.lock().keys().copied().collect();
                    everyone.into_iter().for_each(|id| self.wake(id));
                    let delay = backoff.next_wait();
                    tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "order status listener disconnected");
                    if !platform::retry::Backoff::sleep(delay, &shutdown).await {
                        break;
                    }
                }
            }
        }
        self.listening.store(false, Ordering::Relaxed);
    }

    async fn listen_once(&self, database_url: &str, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let mut conn = AsyncPgConnection::establish(database_url).await?;
        diesel_async::RunQueryDsl::execute(diesel::sql_query("LISTEN order_status"), &mut conn).await?;
        self.listening.store(true, Ordering::Relaxed);
        let mut notifications = std::pin::pin!(conn.notifications_stream());
        loop {
            let notification = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                notification = notifications.next() => notification,
            };
            match notification {
                Some(Ok(notification)) => {
                    if let Ok(order_id) = notification.payload.parse() {
                        self.wake(order_id);
                    }
                }
                Some(Err(error)) => return Err(error.into()),
                None => anyhow::bail!("the listening connection closed"),
            }
        }
    }
}

impl Waiter {
    /// Waits until the order's status changes or `timeout` passes (or, while the listener is
    /// down, one polling interval passes). Returns true if a notification arrived.
    pub async fn changed_within(&mut self, timeout: Duration) -> bool {
        let Some(woken) = self.woken.as_mut() else { return false };
        let timeout = if self.waiters.is_listening() { timeout } else { timeout.min(POLL_WHEN_DEAF) };
        let arrived = matches!(tokio::time::timeout(timeout, woken).await, Ok(Ok(())));
        if arrived {
            // Register again, in case the caller waits for the next change too.
            let (tx, rx) = oneshot::channel();
            self.waiters.lock().entry(self.order_id).or_default().push(tx);
            self.woken = Some(rx);
        }
        arrived
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.woken = None;
        let mut waiting = self.waiters.lock();
        if let Some(list) = waiting.get_mut(&self.order_id) {
            list.retain(|tx| !tx.is_closed());
            if list.is_empty() {
                waiting.remove(&self.order_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_registered_waiter_is_woken_by_its_order_only() {
        let waiters = Arc::new(Waiters::default());
        waiters.listening.store(true, Ordering::Relaxed);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut waiter = waiters.register(a);
        waiters.wake(b);
        assert!(!waiter.changed_within(Duration::from_millis(20)).await);
        waiters.wake(a);
        assert!(waiter.changed_within(Duration::from_millis(20)).await);
    }

    #[tokio::test]
    async fn a_dropped_waiter_leaves_nothing_behind() {
        let waiters = Arc::new(Waiters::default());
        drop(waiters.register(Uuid::new_v4()));
        assert!(waiters.lock().is_empty());
    }
}
