//! Applies inventory's decisions to orders. Runs inside the inbox transaction, so the status
//! change, its history entry and the inbox row commit together.

use async_trait::async_trait;
use diesel_async::AsyncPgConnection;
use messaging::inbox::{HandleError, Handler};
use schema::RawEnvelope;
use schema::events::InventoryEvent;

use crate::domain::OrderStatus::{Cancelled, Cancelling, Confirmed, Pending, Rejected};
use crate::metrics::OrderMetrics;
use crate::repository::transition;

pub struct InventoryEvents {
    pub metrics: OrderMetrics,
}

#[async_trait]
impl Handler for InventoryEvents {
    async fn handle(&self, conn: &mut AsyncPgConnection, event: &RawEnvelope) -> Result<(), HandleError> {
        let decision = InventoryEvent::decode(event).map_err(|e| HandleError::Permanent(e.to_string()))?;
        // An order being cancelled ignores the reservation outcome: the release that follows
        // decides its end.
        let (accepted_at, outcome) = match decision {
            InventoryEvent::Reserved(reserved) => {
                (transition(conn, reserved.order_id, &[Pending], Confirmed, None).await?, "confirmed")
            }
            InventoryEvent::Rejected(rejected) => {
                (transition(conn, rejected.order_id, &[Pending], Rejected, Some(&rejected.reason)).await?, "rejected")
            }
            InventoryEvent::Released(released) => {
                (transition(conn, released.order_id, &[Cancelling], Cancelled, None).await?, "cancelled")
            }
        };
        if let Some(accepted_at) = accepted_at {
            // End to end is acceptance to the first decision; a cancellation is the customer's doing.
            let took = (outcome != "cancelled")
                .then(|| (chrono::Utc::now() - accepted_at).num_microseconds().unwrap_or(0) as f64 / 1e6);
            self.metrics.finished(outcome, took);
            tracing::info!(order_id = %event.aggregate_id, correlation_id = %event.correlation_id, event_type = %event.event_type, "order completed a step");
        } else {
            tracing::info!(order_id = %event.aggregate_id, event_type = %event.event_type, "event does not change the order in its current status");
        }
        Ok(())
    }

    fn after_commit(&self) -> Result<(), platform::crash::InjectedFault> {
        platform::crash::point(crate::CONSUMER_AFTER_COMMIT_BEFORE_ACK)
    }
}
