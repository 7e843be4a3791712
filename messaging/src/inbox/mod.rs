//! The inbox consumer: each Kafka message is applied in one database transaction together
//! with an inbox row keyed by its event id, and its offset is stored only after that
//! transaction committed. A redelivered or re-published event finds its inbox row and is
//! skipped, so at-least-once delivery becomes exactly-once effect.
//!
//! - [`handler`]: what a service plugs in, and the one-transaction [`apply_once`];
//! - `batch`: an event's first attempt shares a transaction with the events waiting
//!   alongside it; if the batch fails, each is tried alone;
//! - `sequence`: the events of one order one after the other, offsets never past unfinished work;
//!   [`InboxConsumer::waiting_for`] standbys, an event counts as finished only once the
//!   synchronous standbys hold its transaction ([`platform::standby`], decision 0030 rule 3),
//!   so that a failover never takes back an effect whose offset the group has passed;
//! - `attempt`: what a failure means ([`handler::Failure`]): a busy or unreachable database
//!   is waited for; an event whose content is refused goes to `<topic>.dlq` at once (an
//!   unreadable message too); a failure of unknown kind is tried [`PoisonPolicy::attempts`]
//!   times first. A dead-lettered event is recorded in the inbox and answered by the
//!   handler ([`Handler::refused`]), so the order it was about still ends;
//! - [`stall`]: a partition whose oldest failing event has failed for too long shows in
//!   `/health` and in `consumer_stalled_seconds`;
//! - `in_hand`: a partition the group takes away is let go once the events held of it are
//!   applied and their offsets stored (within a bound), so its new owner starts after them;
//! - `close`: a stopping consumer commits, leaves its group (decision 0027) and closes;
//! - `lag`: the `consumer_lag_messages` gauge; [`retention`]: giving back the days of the inbox log older than the retention;
//! - `reports`: the errors the client reports between messages, read through at once.
//!
//! [`InboxConsumer::run`] returns an error when the consumer cannot work (it cannot
//! subscribe, or its loop was made to fail): the service treats that as fatal, so a process
//! never looks healthy while nothing is consumed. A Kafka client that librdkafka declares dead
//! is replaced by a new one in the running process (`current`, decision 0022).
//!
//! One room, over 300 lines: the consumer's life (subscribe, receive and dispatch, replace a
//! dead client, stop) is one loop whose states share the client, the permits and the tasks;
//! what each step does with an event lives in the submodules above.

mod attempt;
mod batch;
mod close;
mod current;
pub mod handler;
mod health;
mod in_hand;
mod lag;
pub mod poison;
mod reports;
pub mod retention;
mod sequence;
pub mod stall;

use std::sync::Arc;
use std::time::{Duration, Instant};

use platform::config::KafkaSettings;
use platform::db::PgPool;
use platform::kafka::GroupConsumer;
use platform::standby::StandbyWait;
use rdkafka::Message as _;
use rdkafka::consumer::Consumer as _;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::OwnedMessage;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use self::current::CurrentConsumer;
pub use self::handler::{Committed, Coordinates, Failure, HandleError, Handler, Outcome, apply_once, refuse_once};
pub use self::health::ConsumerHealth;
use self::in_hand::InHand;
pub use self::poison::PoisonPolicy;
use self::reports::ClientReports;
pub use self::retention::{retain, retain_periodically};
use self::sequence::Sequencer;
pub use self::stall::{Stall, Stalls};
use crate::dead_letter::DeadLetterQueue;
use crate::metrics::ConsumerMetrics;
use crate::settings::InboxSettings;

/// Armed with `error`, makes the consume loop end with an error, as a consumer that died
/// would: the test of "a background task that dies takes its process down".
pub const CONSUME_LOOP_POINT: &str = "inbox.consume_loop";

/// Armed with `error`, makes the consume loop receive a fatal error, as librdkafka raises when
/// it declares its client dead: the test of replacing the client in the running process.
pub const FATAL_ERROR_POINT: &str = "inbox.fatal_error";

/// How long a consumer whose client died waits before making a new one; doubled for each
/// client that dies young, up to [`RENEW_PAUSE_MAX`].
const RENEW_PAUSE: Duration = Duration::from_millis(500);
const RENEW_PAUSE_MAX: Duration = Duration::from_secs(30);
/// A client that consumed this long before it died was not dying young.
const RENEW_YOUNG: Duration = Duration::from_secs(60);

/// Why a consumer stopped working before shutdown was asked.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error("cannot subscribe to {topics}: {source}")]
    Subscribe { topics: String, source: KafkaError },
    /// librdkafka marks some errors fatal (a static member fenced by its own rejoin, an
    /// idempotence violation): the client never consumes again. [`InboxConsumer::run`]
    /// replaces it; this error ends the run only if no new client can be made.
    #[error("the Kafka consumer cannot consume any more: {0}")]
    Fatal(KafkaError),
    #[error("cannot make a new Kafka consumer in place of the dead one: {0}")]
    Renew(KafkaError),
    #[error(transparent)]
    Injected(#[from] platform::crash::InjectedFault),
}

/// A Kafka consumer group member bound to a database and a handler.
pub struct InboxConsumer<H> {
    consumer: Arc<CurrentConsumer>,
    kafka: KafkaSettings,
    group: String,
    topics: Vec<String>,
    pool: PgPool,
    handler: Arc<H>,
    metrics: ConsumerMetrics,
    dead_letters: DeadLetterQueue,
    poison: PoisonPolicy,
    stalls: Arc<Stalls>,
    max_in_flight: usize,
    batch_max: usize,
    batch_lock_wait_ms: u64,
    revoke_wait: Duration,
    standbys: StandbyWait,
}

/// What the tasks handling events share, built when the consumer starts.
struct Shared<H> {
    consumer: Arc<GroupConsumer>,
    pool: PgPool,
    handler: Arc<H>,
    metrics: ConsumerMetrics,
    dead_letters: DeadLetterQueue,
    poison: PoisonPolicy,
    stalls: Arc<Stalls>,
    sequencer: Sequencer,
    in_hand: Arc<InHand>,
    /// Where first attempts go, unless each event has a transaction of its own.
    batches: Option<batch::Batches>,
    /// What an applied event waits for before its offset is stored (decision 0030, rule 3).
    standbys: StandbyWait,
}

impl<H: Handler> InboxConsumer<H> {
    /// A member of consumer group `group` for `topics`, applying events to `pool`'s database.
    /// Topics that do not exist yet are fine: the group assigns their partitions once they
    /// appear.
    pub fn new(
        kafka: &KafkaSettings,
        group: &str,
        topics: &[&str],
        settings: &InboxSettings,
        pool: PgPool,
        handler: H,
    ) -> KafkaResult<Self> {
        Ok(Self {
            consumer: Arc::new(CurrentConsumer::new(platform::kafka::consumer(kafka, group)?)),
            kafka: kafka.clone(),
            group: group.to_owned(),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            pool,
            handler: Arc::new(handler),
            metrics: ConsumerMetrics::new(topics),
            dead_letters: DeadLetterQueue::new(kafka, group)?,
            poison: PoisonPolicy::from(settings),
            stalls: Arc::new(Stalls::new(Duration::from_secs(settings.stall_after_secs))),
            max_in_flight: settings.max_in_flight.max(1),
            batch_max: settings.batch_max.max(1),
            batch_lock_wait_ms: settings.batch_lock_wait_ms,
            revoke_wait: Duration::from_millis(settings.revoke_wait_ms),
            standbys: StandbyWait::off(),
        })
    }

    /// Stores an event's offset only once `standbys` hold the transaction that applied it
    /// (decision 0030, rule 3): pass the service's `DatabaseSettings::standby_wait`. Off by
    /// default (a database without standbys).
    pub fn waiting_for(mut self, standbys: StandbyWait) -> Self {
        self.standbys = standbys;
        self
    }

    /// Shows the consumer's counts and lag on `metrics`' `/metrics`.
    pub fn with_metrics(self, metrics: &platform::metrics::Metrics) -> Self {
        self.metrics.register(metrics);
        self
    }

    /// What the consumer did so far (the same counts `/metrics` shows).
    pub fn stats(&self) -> ConsumerMetrics {
        self.metrics.clone()
    }

    /// What the service's `/health` reports of this consumer: its group, partitions, lag,
    /// counts, and whether a partition is stuck.
    pub fn health(&self) -> ConsumerHealth {
        ConsumerHealth {
            group: self.group.clone(),
            consumer: Arc::clone(&self.consumer),
            stalls: Arc::clone(&self.stalls),
            metrics: self.metrics.clone(),
        }
    }

    /// The operator's controls of this consumer: pause, resume, replay (`crate::control`).
    /// Call it on the runtime the consumer runs on: replays run there.
    pub fn control(&self) -> Arc<dyn crate::control::ConsumerControl> {
        Arc::new(crate::control::Control {
            consumer: Arc::clone(&self.consumer),
            handler: Arc::clone(&self.handler),
            pool: self.pool.clone(),
            kafka: self.kafka.clone(),
            group: self.group.clone(),
            topics: self.topics.clone(),
            runtime: tokio::runtime::Handle::current(),
            replaying: Arc::default(),
        })
    }

    /// [`run`](Self::run) as a supervised task named `name` (see `platform::service::supervise`).
    pub fn into_task(self, name: &str, shutdown: CancellationToken) -> platform::service::Task {
        platform::service::fallible(name, async move { Ok(self.run(shutdown).await?) })
    }

    /// Consumes until `shutdown`; events in hand are finished first, then the stored offsets
    /// are committed. A client that librdkafka declares dead is replaced by a new one, which
    /// rejoins the group and goes on from the last committed offsets (what the old one applied
    /// but did not commit is redelivered and recognised by the inbox). Returns an error if
    /// the consumer stopped working before shutdown.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ConsumeError> {
        let mut pause = RENEW_PAUSE;
        loop {
            let began = Instant::now();
            let error = match self.consume_with(self.consumer.get(), &shutdown).await {
                Err(ConsumeError::Fatal(error)) if !shutdown.is_cancelled() => error,
                ended => return ended,
            };
            if began.elapsed() >= RENEW_YOUNG {
                pause = RENEW_PAUSE;
            }
            tracing::error!(%error, group = self.group, pause_ms = pause.as_millis() as u64,
                "librdkafka declared the consumer dead; replacing it with a new client");
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(RENEW_PAUSE_MAX);
            let fresh = platform::kafka::consumer(&self.kafka, &self.group).map_err(ConsumeError::Renew)?;
            let paused = self.consumer.get().context().paused();
            if let Err(error) = fresh.context().set_paused(&fresh, paused) {
                tracing::error!(%error, "cannot keep the new consumer paused as the operator asked");
            }
            let dead = self.consumer.replace(fresh);
            // Dropping the last handle on a client closes it, which may wait on the broker:
            // not on this thread.
            std::thread::spawn(move || drop(dead));
            self.metrics.renewed();
        }
    }

    /// Subscribes `client` and consumes with it until shutdown or until it fails.
    async fn consume_with(&self, client: Arc<GroupConsumer>, shutdown: &CancellationToken) -> Result<(), ConsumeError> {
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        if let Err(source) = client.subscribe(&topics) {
            return Err(ConsumeError::Subscribe { topics: topics.join(", "), source });
        }
        let (batches, batch_runner) = if self.batch_max > 1 {
            let runner = batch::Runner {
                pool: self.pool.clone(),
                handler: Arc::clone(&self.handler),
                metrics: self.metrics.clone(),
                max: self.batch_max,
                lock_wait_ms: self.batch_lock_wait_ms,
                standbys: self.standbys,
            };
            let (batches, runner) = batch::Batches::start(runner, self.max_in_flight);
            (Some(batches), Some(runner))
        } else {
            (None, None)
        };
        let in_hand = Arc::new(InHand::default());
        client.context().before_revoke(finish_before_revoke(Arc::clone(&in_hand), self.revoke_wait));
        let shared = Arc::new(Shared {
            consumer: client,
            pool: self.pool.clone(),
            handler: Arc::clone(&self.handler),
            metrics: self.metrics.clone(),
            dead_letters: self.dead_letters.clone(),
            poison: self.poison,
            stalls: Arc::clone(&self.stalls),
            sequencer: Sequencer::default(),
            in_hand,
            batches,
            standbys: self.standbys,
        });
        let lag = tokio::spawn(lag::report_lag(
            Arc::clone(&shared.consumer),
            shared.metrics.clone(),
            Arc::clone(&shared.stalls),
            shutdown.clone(),
        ));
        let result = consume(&shared, self.max_in_flight, shutdown).await;
        lag.abort();
        let _ = lag.await;
        // Every event in hand is finished: no batch is waiting or running.
        if let Some(runner) = batch_runner {
            runner.abort();
            let _ = runner.await;
        }
        // A dead client commits nothing; `run` closes it once its replacement is in place.
        if !matches!(result, Err(ConsumeError::Fatal(_))) {
            let client = Arc::clone(&shared.consumer);
            drop(shared);
            close::close(client, self.kafka.leave_group_on_stop).await;
        }
        result
    }
}

/// Receives and dispatches messages until shutdown (or an injected failure); returns when
/// every event in hand is finished.
async fn consume<H: Handler>(
    shared: &Arc<Shared<H>>,
    max_in_flight: usize,
    shutdown: &CancellationToken,
) -> Result<(), ConsumeError> {
    let permits = Arc::new(Semaphore::new(max_in_flight));
    let mut tasks = JoinSet::new();
    let mut reports = ClientReports::default();
    let result = loop {
        if let Err(fault) = platform::crash::point(CONSUME_LOOP_POINT) {
            break Err(fault.into());
        }
        if platform::crash::point(FATAL_ERROR_POINT).is_err() {
            break Err(ConsumeError::Fatal(KafkaError::MessageConsumptionFatal(RDKafkaErrorCode::Fatal)));
        }
        let permit = tokio::select! {
            biased;
            () = shutdown.cancelled() => break Ok(()),
            permit = Arc::clone(&permits).acquire_owned() => permit,
        };
        let Ok(permit) = permit else { break Ok(()) };
        let message = tokio::select! {
            biased;
            () = shutdown.cancelled() => break Ok(()),
            message = shared.consumer.recv() => message,
        };
        let message = match message {
            Ok(message) => message.detach(),
            Err(error) if is_fatal(&error) => break Err(ConsumeError::Fatal(error)),
            Err(error) => {
                // The client reconnects by itself; its errors here are reports, not ends.
                reports.take(&error).await;
                continue;
            }
        };
        let mut turn = shared.sequencer.begin(&message);
        let held = shared.in_hand.hold(message.topic(), message.partition());
        let shared = Arc::clone(shared);
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            if let Some(previous) = turn.previous.take() {
                let _ = previous.await; // the previous event of this order finished (or was dropped)
            }
            let settled = shared.process(&message, &shutdown).await;
            if let Some(offset) = shared.sequencer.end(&message, turn, settled) {
                shared.store_offset(&message, offset);
            }
            drop(held);
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    };
    while tasks.join_next().await.is_some() {}
    result
}

/// Before the group takes partitions away: waits (up to `bound`) for the events in hand of them
/// to be applied and their offsets stored, so that librdkafka commits those offsets as it lets
/// the partitions go, and their new owner starts after them (`in_hand`).
fn finish_before_revoke(in_hand: Arc<InHand>, bound: Duration) -> platform::kafka::BeforeRevoke {
    Arc::new(move |revoked| {
        let held = in_hand.count(revoked);
        if held == 0 || bound.is_zero() {
            return;
        }
        let began = Instant::now();
        let left = in_hand.wait_for(revoked, bound);
        let waited_ms = began.elapsed().as_millis() as u64;
        if left == 0 {
            tracing::info!(
                partitions = revoked.len(),
                held,
                waited_ms,
                "finished the events in hand of the partitions taken away before letting them go"
            );
        } else {
            tracing::warn!(
                partitions = revoked.len(),
                held,
                left,
                waited_ms,
                "partitions taken away with events still in hand; their new owner reads those again"
            );
        }
    })
}

/// Whether the consumer can never recover from `error` (see [`ConsumeError::Fatal`]); every
/// other error is a report: the client reconnects and rejoins by itself.
fn is_fatal(error: &KafkaError) -> bool {
    matches!(error, KafkaError::MessageConsumptionFatal(_))
}

impl<H> Shared<H> {
    fn store_offset(&self, message: &OwnedMessage, offset: i64) {
        if let Err(error) = self.consumer.store_offset(message.topic(), message.partition(), offset) {
            // The partition was probably reassigned; its new owner will redeliver, and
            // the inbox recognises what was already applied.
            tracing::debug!(%error, "cannot store offset");
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};

    use super::is_fatal;

    #[test]
    fn only_a_fatal_consumption_error_ends_the_client() {
        assert!(is_fatal(&KafkaError::MessageConsumptionFatal(RDKafkaErrorCode::FencedInstanceId)));
        for passing in [
            KafkaError::MessageConsumption(RDKafkaErrorCode::BrokerTransportFailure),
            KafkaError::MessageConsumption(RDKafkaErrorCode::AllBrokersDown),
            KafkaError::PartitionEOF(3),
        ] {
            assert!(!is_fatal(&passing), "{passing}");
        }
    }
}
