//! Applies orders' events to stock, inside the inbox transaction.

use std::sync::Arc;

use async_trait::async_trait;
use diesel_async::AsyncPgConnection;
use messaging::inbox::{Committed, HandleError, Handler};
use messaging::outbox::Outbox;
use platform::crash::{self, InjectedFault};
use schema::Event as _;
use schema::RawEnvelope;
use schema::events::{OrderEvent, OrderPlaced, OrderReadyToShip, RefusedRequest};

use crate::gremlin::Gremlin;
use crate::stock;

pub struct OrderEvents {
    /// Where inventory's decisions are published.
    pub topic: String,
    pub gremlin: Arc<Gremlin>,
}

#[async_trait]
impl Handler for OrderEvents {
    async fn before(&self, event: &RawEnvelope) {
        if event.event_type == OrderPlaced::TYPE {
            self.gremlin.strike(&event.aggregate_id.to_string()).await;
        }
    }

    fn understands(&self, event: &RawEnvelope) -> bool {
        !OrderEvent::from_a_newer_build(event)
    }

    /// The stock rows a batch's placements, cancellations and shipments will change, in SKU
    /// order (see [`stock::lock_in_sku_order`]).
    async fn lock_for_batch(&self, conn: &mut AsyncPgConnection, events: &[&RawEnvelope]) -> Result<(), HandleError> {
        let (mut placed, mut orders) = (Vec::new(), Vec::new());
        for event in events {
            match OrderEvent::decode(event) {
                Ok(OrderEvent::Placed(order)) => placed.push(order),
                Ok(OrderEvent::Cancelled(cancelled)) => orders.push(cancelled.order_id.0),
                Ok(OrderEvent::ReadyToShip(ready)) => orders.push(ready.order_id.0),
                Err(_) => {}
            }
        }
        let mut skus: Vec<&str> =
            placed.iter().flat_map(|order| order.lines.iter().map(|line| line.sku.as_str())).collect();
        skus.sort_unstable();
        skus.dedup();
        // One row cannot be taken in two orders (a flash sale's batches): nothing to lock
        // ahead, and a sold-out SKU's rejections still read it without a lock.
        if orders.is_empty() && skus.len() <= 1 {
            return Ok(());
        }
        Ok(stock::lock_in_sku_order(conn, &skus, &orders).await?)
    }

    async fn handle(&self, conn: &mut AsyncPgConnection, event: &RawEnvelope) -> Result<Committed, HandleError> {
        let trace = event.trace();
        let out = Outbox::new(&self.topic, &trace);
        // What was done is logged once committed: a batch that rolls back applies its events
        // again, alone, and would log them twice.
        let logged = match OrderEvent::decode(event).map_err(|e| HandleError::Permanent(e.to_string()))? {
            OrderEvent::Placed(placed) => {
                let decision = stock::reserve(conn, event.event_id, &placed, out).await?;
                let order_id = placed.order_id;
                Committed::then(move || tracing::info!(%order_id, ?decision, "order decided"))
            }
            OrderEvent::Cancelled(cancelled) => {
                let released = stock::release(conn, event.event_id, &cancelled, out).await?;
                let (order_id, lines) = (cancelled.order_id, released.len());
                Committed::then(move || tracing::info!(%order_id, lines, "stock released"))
            }
            OrderEvent::ReadyToShip(ready) => {
                let shipped = stock::ship(conn, event.event_id, &ready, out).await?;
                crash::point(crate::SHIP_BEFORE_COMMIT)?;
                let order_id = ready.order_id;
                match shipped.map(|lines| lines.len()) {
                    Some(lines) => Committed::then(move || tracing::info!(%order_id, lines, "stock shipped")),
                    None => Committed::then(move || tracing::warn!(%order_id, "nothing reserved to ship; refused")),
                }
            }
        };
        crash::point(crate::BEFORE_COMMIT)?;
        Ok(logged)
    }

    /// A dead-lettered event still ends its order (decision 0011). A placement that cannot
    /// be processed is rejected (nothing was reserved: its transaction rolled back). A
    /// cancellation that cannot be processed changes no stock: inventory cannot tell a
    /// broken cancellation of an order being cancelled from a forged one of a confirmed
    /// order, so it says what it holds (`InventoryRefused`) and the order service, which
    /// knows, ends the cancellation. An event from a newer build never comes here
    /// ([`Handler::understands`]).
    async fn refused(
        &self,
        conn: &mut AsyncPgConnection,
        event: &RawEnvelope,
        reason: &str,
    ) -> Result<(), HandleError> {
        let trace = event.trace();
        let order_id = event.aggregate_id;
        if event.event_type == OrderPlaced::TYPE {
            let reason = format!("unprocessable order event: {reason}");
            let decision = stock::refuse(conn, order_id, &reason, Outbox::new(&self.topic, &trace)).await?;
            tracing::warn!(%order_id, ?decision, "refused placement answered");
        } else if let Some(request) = RefusedRequest::of(&event.event_type) {
            // Neither a cancellation nor a ship request can change stock blindly: what
            // inventory holds goes back, and the order service ends the request from it.
            let held = stock::report_refusal(conn, order_id, request, reason, Outbox::new(&self.topic, &trace)).await?;
            tracing::warn!(%order_id, ?held, refused_type = request.event_type(), "refused request answered with what inventory holds");
        }
        Ok(())
    }

    fn after_commit(&self, event: &RawEnvelope) -> Result<(), InjectedFault> {
        if event.event_type == OrderReadyToShip::TYPE {
            crash::point(crate::SHIP_AFTER_COMMIT_BEFORE_ACK)?;
        }
        crash::point(crate::AFTER_COMMIT_BEFORE_ACK)
    }
}
