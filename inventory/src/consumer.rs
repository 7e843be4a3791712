//! Applies orders' events to stock, inside the inbox transaction.

use std::sync::Arc;

use async_trait::async_trait;
use diesel_async::AsyncPgConnection;
use messaging::inbox::{HandleError, Handler};
use platform::crash::{self, InjectedFault};
use schema::Event as _;
use schema::RawEnvelope;
use schema::events::{OrderEvent, OrderPlaced};

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

    async fn handle(&self, conn: &mut AsyncPgConnection, event: &RawEnvelope) -> Result<(), HandleError> {
        let trace = event.trace();
        match OrderEvent::decode(event).map_err(|e| HandleError::Permanent(e.to_string()))? {
            OrderEvent::Placed(placed) => {
                let decision = stock::reserve(conn, event.event_id, &placed, &trace, &self.topic).await?;
                tracing::info!(order_id = %placed.order_id, ?decision, "order decided");
            }
            OrderEvent::Cancelled(cancelled) => {
                let released = stock::release(conn, event.event_id, &cancelled, &trace, &self.topic).await?;
                tracing::info!(order_id = %cancelled.order_id, lines = released.len(), "stock released");
            }
        }
        crash::point(crate::BEFORE_COMMIT)?;
        Ok(())
    }

    fn after_commit(&self) -> Result<(), InjectedFault> {
        crash::point(crate::AFTER_COMMIT_BEFORE_ACK)
    }
}
