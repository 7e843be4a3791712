//! The relay's deletes, on a database session of their own. With one session, Postgres
//! deleted a settled batch and only then read the next one, while the relay waited for both
//! and Postgres waited for the relay to send: each was idle half the time. Here Postgres
//! deletes one batch on this session while the relay's main session reads the next and the
//! relay sends it. Deletes run one at a time, in the order they were started, and their
//! outcomes come back in that order ([`crate::pipeline::Pipeline::deleted`] relies on it).

use diesel::ConnectionError;
use diesel_async::{AsyncConnection as _, AsyncPgConnection};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::metrics::{OutboxMetrics, Stage};
use crate::pipeline::Store as _;

#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error("deleting published rows: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("the session deleting published rows is gone")]
    Stopped,
}

pub struct Deleter {
    requests: mpsc::UnboundedSender<Vec<i64>>,
    outcomes: mpsc::UnboundedReceiver<Result<usize, diesel::result::Error>>,
    pending: usize,
    task: JoinHandle<()>,
}

impl Deleter {
    /// Opens the session and starts the task that deletes on it; each delete's time goes to
    /// `metrics`.
    pub async fn connect(database_url: &str, metrics: OutboxMetrics) -> Result<Self, ConnectionError> {
        let mut conn = AsyncPgConnection::establish(database_url).await?;
        let (requests, mut work) = mpsc::unbounded_channel::<Vec<i64>>();
        let (report, outcomes) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Some(ids) = work.recv().await {
                let started = std::time::Instant::now();
                let outcome = conn.delete(&ids).await;
                metrics.stage(Stage::delete, started.elapsed());
                let failed = outcome.is_err();
                if report.send(outcome).is_err() || failed {
                    return;
                }
            }
        });
        Ok(Self { requests, outcomes, pending: 0, task })
    }

    /// Starts deleting `ids` after the deletes already started.
    pub fn start(&mut self, ids: Vec<i64>) {
        // If the task is gone, `finish` says so.
        let _ = self.requests.send(ids);
        self.pending += 1;
    }

    /// How many started deletes have not been finished.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Waits for the oldest started delete; how many rows it deleted. `None` if none is
    /// pending.
    pub async fn finish(&mut self) -> Option<Result<usize, DeleteError>> {
        if self.pending == 0 {
            return None;
        }
        let received = self.outcomes.recv().await;
        Some(self.finished(received))
    }

    /// The oldest started delete if it is done, without waiting.
    pub fn try_finish(&mut self) -> Option<Result<usize, DeleteError>> {
        if self.pending == 0 {
            return None;
        }
        let received = match self.outcomes.try_recv() {
            Ok(outcome) => Some(outcome),
            Err(mpsc::error::TryRecvError::Empty) => return None,
            Err(mpsc::error::TryRecvError::Disconnected) => None,
        };
        Some(self.finished(received))
    }

    /// One delete fewer pending; what the task reported, or that it is gone.
    fn finished(&mut self, received: Option<Result<usize, diesel::result::Error>>) -> Result<usize, DeleteError> {
        self.pending -= 1;
        received.ok_or(DeleteError::Stopped)?.map_err(DeleteError::from)
    }
}

impl Drop for Deleter {
    fn drop(&mut self) {
        self.task.abort();
    }
}
