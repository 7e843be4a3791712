//! Handling one event to the end: applied (or recognised as a duplicate), retried while its
//! failure may pass, and dead-lettered when it never will.

use std::time::Duration;

use backon::BackoffBuilder as _;
use rdkafka::Message as _;
use rdkafka::message::OwnedMessage;
use schema::RawEnvelope;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::handler::{Coordinates, HandleError, Handler, Outcome, apply_once};
use crate::metrics::EventOutcome;

/// How one attempt at an event ended.
enum Decided {
    Applied,
    Permanent(HandleError),
    Interrupted,
}

impl<H: Handler> Shared<H> {
    /// Handles one message to the end: applied, recognised as a duplicate, or dead-lettered.
    /// Returns false if shutdown came first and the message must be delivered again.
    #[tracing::instrument(skip_all, fields(topic = message.topic(), partition = message.partition(), offset = message.offset(), event_id, event_type, order_id, correlation_id))]
    pub(super) async fn process(&self, message: &OwnedMessage, shutdown: &CancellationToken) -> bool {
        let from =
            Coordinates { topic: message.topic().to_owned(), partition: message.partition(), offset: message.offset() };
        let event = match RawEnvelope::from_slice(message.payload().unwrap_or_default()) {
            Ok(event) => event,
            Err(error) => {
                // Parsing the same bytes again cannot give another answer (decision 0007).
                tracing::error!(%error, "unreadable event");
                return self.dead_letter(message, &format!("unreadable event: {error}"), 1, shutdown).await;
            }
        };
        let span = tracing::Span::current();
        span.record("event_id", tracing::field::display(event.event_id));
        span.record("event_type", event.event_type.as_str());
        span.record("order_id", tracing::field::display(event.aggregate_id));
        span.record("correlation_id", event.correlation_id.as_str());
        self.handler.before(&event).await;

        let mut pauses = self.poison.backoff();
        let mut attempts = 1;
        loop {
            let error = match self.apply_until_decided(&event, &from, shutdown).await {
                Decided::Applied => return true,
                Decided::Interrupted => return false,
                Decided::Permanent(error) => error,
            };
            let Some(pause) = pauses.next() else {
                tracing::error!(%error, attempts, "event cannot be applied; dead-lettering it");
                return self.dead_letter(message, &error.to_string(), attempts, shutdown).await;
            };
            tracing::warn!(%error, attempts, retry_in_ms = pause.as_millis() as u64, "event failed; trying again");
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(pause) => {}
            }
            attempts += 1;
        }
    }

    /// Applies the event, retrying transient failures until it is applied, fails
    /// permanently, or shutdown comes.
    async fn apply_until_decided(
        &self,
        event: &RawEnvelope,
        from: &Coordinates,
        shutdown: &CancellationToken,
    ) -> Decided {
        let mut pauses = platform::retry::dependency_backoff().build();
        loop {
            let result = match self.pool.get().await {
                Ok(mut conn) => apply_once(&mut conn, &self.handler, event, from).await,
                Err(error) => Err(HandleError::Unavailable(error.to_string())),
            };
            let pause = match result {
                Ok(outcome) => {
                    // One line per event would be most of a busy service's log; the counters
                    // count them. A redelivery is worth a line.
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
                    match self.handler.after_commit() {
                        Ok(()) => return Decided::Applied,
                        // The effect is committed but not acknowledged: handle the event
                        // again, as a redelivery would, and the inbox recognises it.
                        Err(fault) => {
                            tracing::warn!(%fault, "acknowledgement failed; handling the event again");
                            continue;
                        }
                    }
                }
                Err(error) if error.is_transient() => {
                    let pause = pauses.next().unwrap_or(Duration::from_secs(5));
                    tracing::warn!(%error, retry_in_ms = pause.as_millis() as u64, "event not applied yet; retrying");
                    pause
                }
                Err(error) => return Decided::Permanent(error),
            };
            tokio::select! {
                () = shutdown.cancelled() => return Decided::Interrupted,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Publishes `message` to its dead-letter topic, retrying until the broker takes it or
    /// shutdown comes (then it is not settled and will be redelivered). The offset of a
    /// dead-lettered event is stored only after the broker acknowledged the dead letter, so
    /// a poison event is never silently dropped.
    async fn dead_letter(
        &self,
        message: &OwnedMessage,
        error: &str,
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
                    return true;
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
