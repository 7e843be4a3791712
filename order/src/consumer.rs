//! Applies inventory's decisions to orders. Runs inside the inbox transaction, so the status
//! change, its history entry and the inbox row commit together.

use async_trait::async_trait;
use diesel_async::AsyncPgConnection;
use messaging::inbox::{Committed, HandleError, Handler};
use schema::Event as _;
use schema::events::{
    InventoryEvent, InventoryRefused, InventoryRejected, InventoryReleased, InventoryReserved, InventoryShipped,
    OrderCancelled, RefusedRequest,
};
use schema::{Envelope, RawEnvelope};

use crate::domain::OrderStatus::{self, Cancelled, Cancelling, Pending, Shipped, Shipping};
use crate::domain::Step;
use crate::metrics::OrderMetrics;
use crate::repository::{step, transition};

pub struct InventoryEvents {
    pub metrics: OrderMetrics,
    /// Where a cancellation is published (see [`Handler::refused`] below).
    pub orders_topic: String,
}

#[async_trait]
impl Handler for InventoryEvents {
    fn understands(&self, event: &RawEnvelope) -> bool {
        !InventoryEvent::from_a_newer_build(event)
    }

    async fn handle(&self, conn: &mut AsyncPgConnection, event: &RawEnvelope) -> Result<Committed, HandleError> {
        let decision = InventoryEvent::decode(event).map_err(|e| HandleError::Permanent(e.to_string()))?;
        // An order being cancelled ignores the reservation outcome: the release that follows
        // decides its end.
        let (accepted_at, outcome) = match decision {
            InventoryEvent::Reserved(reserved) => {
                (step(conn, reserved.order_id, Step::Reserved, None).await?, "confirmed")
            }
            InventoryEvent::Rejected(rejected) => {
                (step(conn, rejected.order_id, Step::Rejected, Some(&rejected.reason)).await?, "rejected")
            }
            InventoryEvent::Released(released) => {
                (step(conn, released.order_id, Step::Released, None).await?, "cancelled")
            }
            InventoryEvent::Shipped(shipped) => (step(conn, shipped.order_id, Step::Shipped, None).await?, "shipped"),
            InventoryEvent::Refused(refused) => {
                end_refused_request(conn, &refused).await?;
                return Ok(Committed::nothing());
            }
        };
        let Some(accepted_at) = accepted_at else {
            tracing::info!(order_id = %event.aggregate_id, event_type = %event.event_type, "event does not change the order in its current status");
            return Ok(Committed::nothing());
        };
        // Counted and logged once committed: a transaction that rolls back (its batch failed)
        // is applied again and would count the order twice. End to end is acceptance to the
        // first decision; a cancellation is the customer's doing, a shipment the operator's.
        let metrics = self.metrics.clone();
        let (order_id, correlation_id, event_type) =
            (event.aggregate_id, event.correlation_id.clone(), event.event_type.clone());
        Ok(Committed::then(move || {
            tracing::info!(%order_id, %correlation_id, %event_type, "order completed a step");
            let took = matches!(outcome, "confirmed" | "rejected")
                .then(|| (chrono::Utc::now() - accepted_at).num_microseconds().unwrap_or(0) as f64 / 1e6);
            metrics.finished(outcome, took);
        }))
    }

    /// A dead-lettered answer from inventory still ends its order (decision 0011). If the
    /// answer to a placement cannot be read, whether stock was reserved is unknown: the order
    /// is cancelled, so inventory releases whatever it holds and the release ends it. If the
    /// answer to a cancellation cannot be read, it was the release (inventory's only answer
    /// to one): the order is cancelled. An unreadable `InventoryShipped` still says the stock
    /// left: the order is shipped.
    async fn refused(
        &self,
        conn: &mut AsyncPgConnection,
        event: &RawEnvelope,
        reason: &str,
    ) -> Result<(), HandleError> {
        let order_id = event.aggregate_id;
        let why = format!("inventory's answer could not be processed: {reason}");
        let (from, to) = match event.event_type.as_str() {
            InventoryReserved::TYPE | InventoryRejected::TYPE => (Pending, Cancelling),
            InventoryReleased::TYPE => (Cancelling, Cancelled),
            InventoryShipped::TYPE => (Shipping, Shipped),
            _ => return Ok(()),
        };
        if transition(conn, order_id, &[from], to, Some(&why)).await?.is_none() {
            return Ok(());
        }
        match to {
            Cancelling => {
                let cancel = Envelope::new(OrderCancelled { order_id }, &event.trace());
                messaging::outbox::enqueue(conn, &self.orders_topic, &cancel).await?;
            }
            Shipped => self.metrics.finished("shipped", None),
            _ => self.metrics.finished("cancelled", None),
        }
        tracing::warn!(%order_id, status = to.as_str(), "inventory's answer could not be processed; the order moves on");
        Ok(())
    }

    fn after_commit(&self, _event: &RawEnvelope) -> Result<(), platform::crash::InjectedFault> {
        platform::crash::point(crate::CONSUMER_AFTER_COMMIT_BEFORE_ACK)
    }
}

/// Inventory could not process this order's cancellation or ship request and changed
/// nothing: the order leaves CANCELLING or SHIPPING for what inventory holds (a reserved order
/// is confirmed again, and the customer may cancel, or the operator ship, again), with the
/// reason in its history. Any other refusal, or an order not waiting for that request (a
/// forged event), changes nothing.
async fn end_refused_request(conn: &mut AsyncPgConnection, refused: &InventoryRefused) -> Result<(), HandleError> {
    let (waiting_in, what) = match refused.refused_type {
        RefusedRequest::OrderCancelled => (Cancelling, "cancellation"),
        RefusedRequest::OrderReadyToShip => (Shipping, "shipment"),
    };
    let back_to = OrderStatus::holding(refused.reservation);
    let why = format!("the {what} could not be processed: {}", refused.reason);
    if transition(conn, refused.order_id, &[waiting_in], back_to, Some(&why)).await?.is_some() {
        tracing::warn!(order_id = %refused.order_id, status = back_to.as_str(), what, "request refused by inventory; the order is back to what inventory holds");
    }
    Ok(())
}
