//! Handling one event to the end: applied (or recognised as a duplicate); retried for as long
//! as the database is busy; dead-lettered at once when its content is refused, or after a
//! few tries when the failure is of an unknown kind (decision 0011). A dead-lettered event is
//! then recorded in the inbox and answered by the handler, so its order still ends.

use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder as _;
use rdkafka::Message as _;
use rdkafka::message::OwnedMessage;
use schema::RawEnvelope;
use tokio_util::sync::CancellationToken;

use tracing::Instrument as _;

use super::Shared;
use super::handler::{Coordinates, Failure, HandleError, Handler, Outcome, apply_once, refuse_once};
use crate::metrics::EventOutcome;

/// Returns once the synchronous standbys hold what `conn` committed (decision 0030, rule 3);
/// until then the event is not finished and its offset is not stored. A wait past its bound
/// is an unavailable database: the event is tried again, found in the inbox, and waited for
/// once more.
pub(super) async fn held_by_standbys(
    standbys: &platform::standby::StandbyWait,
    conn: &mut diesel_async::AsyncPgConnection,
) -> Result<(), HandleError> {
    standbys
        .until_committed_held(conn)
        .await
        .map(drop)
        .map_err(|error| HandleError::Unavailable(format!("the commit is not held by the standbys yet: {error}")))
}

/// How much of a failure's text [`Handler::refused`] is given.
const REFUSAL_REASON_LEN: usize = 300;

/// Writes the time `message` spent in Kafka, from its timestamp (the relay's send) until now,
/// as a child of the publication its `traceparent` header names; returns the context the
/// consumer's span continues. `None` without that header or without export.
fn kafka_hop(message: &OwnedMessage) -> Option<String> {
    use platform::trace::{Hop, KeyValue, SpanKind};
    use rdkafka::message::Headers as _;

    if !platform::trace::exporting() {
        return None;
    }
    let parent = message
        .headers()?
        .iter()
        .find(|header| header.key == "traceparent")
        .and_then(|header| std::str::from_utf8(header.value?).ok())?;
    let now = std::time::SystemTime::now();
    let sent = message
        .timestamp()
        .to_millis()
        .and_then(|ms| u64::try_from(ms).ok())
        .map_or(now, |ms| std::time::UNIX_EPOCH + Duration::from_millis(ms))
        .min(now);
    let attributes = vec![
        KeyValue::new("messaging.system", "kafka"),
        KeyValue::new("messaging.destination.name", message.topic().to_owned()),
        KeyValue::new("messaging.destination.partition.id", i64::from(message.partition())),
        KeyValue::new("messaging.kafka.offset", message.offset()),
    ];
    let hop = Hop::record("kafka", SpanKind::Consumer, Some(parent), (sent, now), attributes);
    hop.as_ref().and_then(platform::trace::traceparent_of).or_else(|| Some(parent.to_owned()))
}

impl<H: Handler> Shared<H> {
    /// Handles one message to the end: applied, recognised as a duplicate, or dead-lettered.
    /// Returns false if shutdown came first and the message must be delivered again.
    ///
    /// Its span continues the event's trace: a child of the time the message spent in Kafka
    /// ([`kafka_hop`]), itself a child of the relay's publication.
    pub(super) async fn process(&self, message: &OwnedMessage, shutdown: &CancellationToken) -> bool {
        let span = tracing::info_span!(
            "consume",
            otel.name = format!("consume {}", message.topic()),
            otel.kind = "consumer",
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            event_id = tracing::field::Empty,
            event_type = tracing::field::Empty,
            order_id = tracing::field::Empty,
            correlation_id = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
        platform::trace::continues(&span, kafka_hop(message).as_deref());
        platform::trace::name_in_logs(&span);
        self.process_in_span(message, shutdown).instrument(span).await
    }

    async fn process_in_span(&self, message: &OwnedMessage, shutdown: &CancellationToken) -> bool {
        let from = &Coordinates {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
        };
        // Reading the same bytes again cannot give another answer (decision 0007).
        let mut event = match RawEnvelope::parse(message.payload().unwrap_or_default()) {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(%error, "unreadable event");
                let reason = format!("unreadable event: {error}");
                return self.dead_letter(message, from, None, (&reason, &reason), 1, shutdown).await;
            }
        };
        if let Err(error) = event.validate() {
            // A value no query may see: refused before any, and answered from the event's
            // identity alone (its payload is not trusted).
            tracing::warn!(%error, "event refused on reading");
            let reason = format!("unreadable event: {error}");
            return self.dead_letter(message, from, event.identity().as_ref(), (&reason, &reason), 1, shutdown).await;
        }
        // What the handler causes (its outbox rows) continues from this event's span.
        if let Some(here) = platform::trace::current() {
            event.traceparent = Some(here);
        }
        let event = Arc::new(event);
        let span = tracing::Span::current();
        span.record("event_id", tracing::field::display(event.event_id));
        span.record("event_type", event.event_type.as_str());
        span.record("order_id", tracing::field::display(event.aggregate_id));
        span.record("correlation_id", event.correlation_id.as_str());
        self.handler.before(&event).await;

        // First with the events waiting alongside it, in one transaction (`batch`); if that
        // fails, for whichever event's reason, the event is tried alone below.
        if let Some(batches) = &self.batches {
            match batches.apply(&event, from).await {
                Ok(outcome) => match self.settle(&event, from, outcome) {
                    Ok(()) => return true,
                    Err(error) => tracing::debug!(%error, "failed after its batch committed; trying it alone"),
                },
                Err(reason) => tracing::debug!(reason, "its batch rolled back; trying it alone"),
            }
        }
        let mut busy_pauses = platform::retry::dependency_backoff().build();
        let mut unknown_pauses = self.poison.backoff();
        let mut attempts = 0;
        let mut failure = None;
        loop {
            attempts += 1;
            let error = match self.apply(&event, from).await {
                Ok(()) => return true,
                Err(error) => error,
            };
            failure.get_or_insert_with(|| self.stalls.failing(from)).again(&error.to_string());
            let pause = match error.failure() {
                Failure::Busy => {
                    let pause = busy_pauses.next().unwrap_or(Duration::from_secs(5));
                    tracing::warn!(%error, attempts, retry_in_ms = pause.as_millis() as u64, "database busy or unreachable; trying again");
                    pause
                }
                Failure::Refused => {
                    tracing::warn!(%error, attempts, "event refused; dead-lettering it");
                    let reasons = (&*error.to_string(), &*error.public_reason());
                    return self.dead_letter(message, from, Some(&*event), reasons, attempts, shutdown).await;
                }
                Failure::Unknown => match unknown_pauses.next() {
                    Some(pause) => {
                        tracing::warn!(%error, attempts, retry_in_ms = pause.as_millis() as u64, "event failed for an unknown reason; trying again");
                        pause
                    }
                    None => {
                        tracing::error!(%error, attempts, "event keeps failing for an unknown reason; dead-lettering it");
                        let reasons = (&*error.to_string(), &*error.public_reason());
                        return self.dead_letter(message, from, Some(&*event), reasons, attempts, shutdown).await;
                    }
                },
            };
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// One attempt: the event applied (or recognised as a duplicate) and its transaction
    /// committed, or why not.
    async fn apply(&self, event: &RawEnvelope, from: &Coordinates) -> Result<(), HandleError> {
        let mut conn = self.pool.get().await.map_err(|e| HandleError::Unavailable(e.to_string()))?;
        let outcome = apply_once(&mut conn, &*self.handler, event, from).await?;
        held_by_standbys(&self.standbys, &mut conn).await?;
        drop(conn);
        self.settle(event, from, outcome)
    }

    /// What follows an event's commit: it is counted, and the handler's after-commit step
    /// runs (a crash point set to `error` there makes the event be handled again).
    fn settle(&self, event: &RawEnvelope, from: &Coordinates, outcome: Outcome) -> Result<(), HandleError> {
        // One line per event would be most of a busy service's log; the counters count
        // them. A redelivery is worth a line.
        match outcome {
            Outcome::Processed => {
                self.metrics.event(&from.topic, EventOutcome::processed);
                tracing::debug!("event handled");
            }
            Outcome::Duplicate => {
                self.metrics.event(&from.topic, EventOutcome::duplicate);
                tracing::info!("duplicate event: already handled");
            }
        }
        // The effect is committed but not acknowledged: the fault makes the event be
        // handled again, as a redelivery would, and the inbox recognises it.
        self.handler.after_commit(event).map_err(HandleError::from)
    }

    /// Records the refusal of a dead-lettered event in the inbox and lets the handler answer
    /// it (decision 0011), retrying while the database is busy. Gives up, loudly, on any
    /// other failure: the event is in the dead-letter topic already.
    async fn answer_refusal(
        &self,
        event: &RawEnvelope,
        from: &Coordinates,
        reason: &str,
        shutdown: &CancellationToken,
    ) -> bool {
        if !self.handler.understands(event) {
            tracing::warn!(event_type = %event.event_type, version = event.schema_version, "an event from a newer build waits in the dead letters for this service's upgrade and a redrive");
            return true;
        }
        // The handler may show the reason to a customer: the start of it is enough.
        let reason: String = reason.chars().take(REFUSAL_REASON_LEN).collect();
        let mut pauses = platform::retry::dependency_backoff().build();
        loop {
            let result = match self.pool.get().await {
                Ok(mut conn) => match refuse_once(&mut conn, &*self.handler, event, from, &reason).await {
                    Ok(outcome) => held_by_standbys(&self.standbys, &mut conn).await.map(|()| outcome),
                    Err(error) => Err(error),
                },
                Err(error) => Err(HandleError::Unavailable(error.to_string())),
            };
            let error = match result {
                Ok(Outcome::Processed) => return true,
                Ok(Outcome::Duplicate) => {
                    tracing::info!("dead-lettered event was already answered");
                    return true;
                }
                Err(error) => error,
            };
            if error.failure() != Failure::Busy {
                tracing::error!(%error, "cannot record the refusal of a dead-lettered event; its order is left to the checker");
                return true;
            }
            let pause = pauses.next().unwrap_or(Duration::from_secs(5));
            tracing::warn!(%error, retry_in_ms = pause.as_millis() as u64, "cannot record the refusal yet");
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Publishes `message` to its dead-letter topic, retrying until the broker takes it or
    /// shutdown comes (then it is not settled and will be redelivered). The offset of a
    /// dead-lettered event is stored only after the broker acknowledged the dead letter, so
    /// a poison event is never silently dropped. `error` goes into the dead letter, `answer`
    /// into the order's answer (`HandleError::public_reason`).
    async fn dead_letter(
        &self,
        message: &OwnedMessage,
        from: &Coordinates,
        event: Option<&RawEnvelope>,
        (error, answer): (&str, &str),
        attempts: usize,
        shutdown: &CancellationToken,
    ) -> bool {
        self.metrics.event(message.topic(), EventOutcome::failed);
        let mut pauses = platform::retry::dependency_backoff().build();
        loop {
            match self.dead_letters.publish(message, error, attempts).await {
                Ok((partition, offset)) => {
                    self.metrics.event(message.topic(), EventOutcome::dead_lettered);
                    tracing::warn!(dlq_partition = partition, dlq_offset = offset, error, "event dead-lettered");
                    let Some(event) = event else { return true };
                    return self.answer_refusal(event, from, answer, shutdown).await;
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
