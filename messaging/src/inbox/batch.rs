//! Several events in one transaction (decision 0025). An event's first attempt joins a batch:
//! one task takes every event waiting when the previous batch committed (up to
//! [`InboxSettings::batch_max`](crate::settings::InboxSettings::batch_max)) and applies them,
//! each with its inbox row, in one transaction, so that a busy consumer pays one `BEGIN` and
//! one `COMMIT` for many events. If anything in the batch fails, the whole of it rolls back
//! and each of its events is tried again alone (`attempt`), where its own failure, if it has
//! one, is classified and retried or dead-lettered as before.
//!
//! One task runs the batches, one after the other, and answers each once the synchronous
//! standbys hold it (decision 0030, rule 3), waiting for them alongside the next batch. Batches of other instances of the service
//! run at the same time; so that two of them never lock the same rows in opposite orders
//! and wait for each other, a batch of several events starts with the handler's
//! [`Handler::lock_for_batch`], which locks the shared rows its events will change in one
//! fixed order. A batch waits for a row lock only so long
//! ([`InboxSettings::batch_lock_wait_ms`]); then it rolls back, and its events, tried alone,
//! wait for the row each on its own.
//!
//! Events of one order never share a batch: the sequencer starts an order's next event only
//! once the previous one committed.
//!
//! [`InboxSettings::batch_lock_wait_ms`]: crate::settings::InboxSettings::batch_lock_wait_ms

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use diesel_async::{AsyncConnection as _, SimpleAsyncConnection as _};
use futures::FutureExt as _;
use platform::db::PgPool;
use schema::RawEnvelope;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use super::handler::{Committed, Coordinates, HandleError, Handler, Outcome, record_and_handle};
use crate::metrics::ConsumerMetrics;

/// One event waiting for a batch, and where its answer goes.
struct Request {
    event: Arc<RawEnvelope>,
    from: Coordinates,
    /// The event's span, so that what the handler logs names the event.
    span: tracing::Span,
    reply: oneshot::Sender<Result<Outcome, String>>,
}

/// The way into the batches. Dropping the last one ends the task that runs them.
pub(super) struct Batches {
    requests: mpsc::Sender<Request>,
}

impl Batches {
    /// Starts the task that runs the batches; `waiting` (at least 1) bounds the events that
    /// may wait for it (the consumer's events in flight).
    pub fn start<H: Handler>(runner: Runner<H>, waiting: usize) -> (Self, JoinHandle<()>) {
        let (requests, waiting) = mpsc::channel(waiting);
        (Self { requests }, tokio::spawn(runner.run(waiting)))
    }

    /// Applies `event` in the next batch: its outcome once the batch committed, or why the
    /// batch did not (then nothing of it was applied, and the event is to be tried alone).
    pub async fn apply(&self, event: &Arc<RawEnvelope>, from: &Coordinates) -> Result<Outcome, String> {
        let (reply, answer) = oneshot::channel();
        let request = Request { event: Arc::clone(event), from: from.clone(), span: tracing::Span::current(), reply };
        if self.requests.send(request).await.is_err() {
            return Err("the batches have stopped".to_owned());
        }
        answer.await.unwrap_or_else(|_| Err("the batch ended without an answer".to_owned()))
    }
}

/// What runs the batches.
pub(super) struct Runner<H> {
    pub pool: PgPool,
    pub handler: Arc<H>,
    pub metrics: ConsumerMetrics,
    /// The most events in one batch (at least 1).
    pub max: usize,
    /// The batch transaction's `lock_timeout`, in milliseconds.
    pub lock_wait_ms: u64,
    /// What a committed batch waits for before its events are answered (decision 0030, rule 3).
    pub standbys: platform::standby::StandbyWait,
}

/// A batch whose transaction has ended, on its way to its answer.
type Ended = (Vec<Request>, Result<Vec<(Outcome, Committed)>, String>);

/// How many committed batches may wait for the standbys while the next ones are applied.
const HELD_AHEAD: usize = 8;

impl<H: Handler> Runner<H> {
    /// Applies batches one after the other and, alongside, answers each once the synchronous
    /// standbys hold it (decision 0030, rule 3). The wait is off the transactions' path: while
    /// the standbys catch up with one batch, the next is applied, and one wait covers every
    /// batch committed before it began — as a group commit covers the commits that queued
    /// behind it. Waiting in line instead cost the inventory consumer more than its capacity
    /// on the three-node formation (decision 0031).
    async fn run(self, waiting: mpsc::Receiver<Request>) {
        let (ended, to_answer) = mpsc::channel(HELD_AHEAD);
        tokio::join!(self.transactions(waiting, ended), self.answers(to_answer));
    }

    /// Takes every event waiting when the previous batch ended and applies them together.
    async fn transactions(&self, mut waiting: mpsc::Receiver<Request>, ended: mpsc::Sender<Ended>) {
        let lock_wait = format!("SET LOCAL lock_timeout = {}", self.lock_wait_ms);
        let mut batch = Vec::with_capacity(self.max);
        while waiting.recv_many(&mut batch, self.max).await > 0 {
            // A handler that panics fails its batch, not the task: its events are tried alone.
            let result = AssertUnwindSafe(self.apply(&batch, &lock_wait))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| Err(HandleError::Permanent("a handler panicked".to_owned())));
            let batch = std::mem::replace(&mut batch, Vec::with_capacity(self.max));
            if ended.send((batch, result.map_err(|error| error.to_string()))).await.is_err() {
                return;
            }
        }
    }

    /// Answers ended batches in the order they ended: a committed one once the standbys hold
    /// it. A position read after a batch's commit lies past it (`platform::standby`), so one
    /// wait serves every batch that had committed when it began.
    async fn answers(&self, mut ended: mpsc::Receiver<Ended>) {
        let mut group = Vec::with_capacity(HELD_AHEAD);
        while ended.recv_many(&mut group, HELD_AHEAD).await > 0 {
            let held = if group.iter().any(|(_, result)| result.is_ok()) { self.held().await } else { Ok(()) };
            for (mut batch, result) in group.drain(..) {
                let result = result.and_then(|done| held.clone().map(|()| done));
                self.metrics.batch(batch.len(), result.is_ok());
                answer(&mut batch, result);
            }
        }
    }

    /// Returns once the standbys hold every commit made so far; if they do not in time, the
    /// batches' events are tried alone, found in the inbox, and waited for again there.
    async fn held(&self) -> Result<(), String> {
        if !self.standbys.is_on() {
            return Ok(());
        }
        let mut conn =
            self.pool.get().await.map_err(|error| HandleError::Unavailable(error.to_string()).to_string())?;
        super::attempt::held_by_standbys(&self.standbys, &mut conn).await.map_err(|error| error.to_string())
    }

    /// Every event of `batch`, each with its inbox row, in one transaction that first runs
    /// `lock_wait`.
    async fn apply(&self, batch: &[Request], lock_wait: &str) -> Result<Vec<(Outcome, Committed)>, HandleError> {
        // A trace of its own, linked to each event's: the transaction is all of theirs.
        let span = tracing::info_span!("inbox.batch", events = batch.len());
        platform::trace::link(&span, batch.iter().map(|request| platform::trace::context(&request.span)));
        let mut conn = self.pool.get().await.map_err(|e| HandleError::Unavailable(e.to_string()))?;
        conn.transaction::<_, HandleError, _>(async |conn| {
            conn.batch_execute(lock_wait).await?;
            if batch.len() > 1 {
                let events: Vec<&RawEnvelope> = batch.iter().map(|request| &*request.event).collect();
                self.handler.lock_for_batch(conn, &events).instrument(tracing::info_span!("inbox.lock")).await?;
            }
            let mut done = Vec::with_capacity(batch.len());
            for request in batch {
                let applied = record_and_handle(conn, &*self.handler, &request.event, &request.from);
                done.push(applied.instrument(request.span.clone()).await?);
            }
            Ok(done)
        })
        .instrument(span)
        .await
    }
}

/// Tells each event of `batch` how its batch ended, and empties it.
fn answer(batch: &mut Vec<Request>, result: Result<Vec<(Outcome, Committed)>, String>) {
    match result {
        Ok(done) => {
            for (request, (outcome, committed)) in batch.drain(..).zip(done) {
                request.span.in_scope(|| committed.run());
                let _ = request.reply.send(Ok(outcome));
            }
        }
        Err(reason) => {
            tracing::info!(error = %reason, events = batch.len(), "a batch did not finish; its events are tried alone");
            for request in batch.drain(..) {
                let _ = request.reply.send(Err(reason.clone()));
            }
        }
    }
}
