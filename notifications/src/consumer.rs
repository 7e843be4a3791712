//! Which event owes the customer which message, decided inside the event's inbox
//! transaction: the message is owed exactly once however often the event comes.

use std::sync::Arc;

use async_trait::async_trait;
use diesel_async::AsyncPgConnection;
use messaging::inbox::{Committed, HandleError, Handler};
use platform::crash::{self, InjectedFault};
use schema::Event as _;
use schema::RawEnvelope;
use schema::events::{InventoryRejected, InventoryReleased, InventoryReserved, InventoryShipped, OrderPlaced};
use tokio::sync::Notify;

use crate::store::{self, Kind};

pub struct OrderOutcomes {
    /// Woken after a commit that may have owed a message.
    pub owed: Arc<Notify>,
    /// An outcome decided longer ago than this is not mailed (see [`MailSettings::stale_after_hours`]).
    ///
    /// [`MailSettings::stale_after_hours`]: crate::configuration::MailSettings::stale_after_hours
    pub stale_after: chrono::TimeDelta,
}

#[async_trait]
impl Handler for OrderOutcomes {
    /// A newer schema version of an event it reads waits in the dead letters for this
    /// service's upgrade (decision 0017); unknown types pass (see `handle`).
    fn understands(&self, event: &RawEnvelope) -> bool {
        !(event.newer_than::<OrderPlaced>()
            || event.newer_than::<InventoryReserved>()
            || event.newer_than::<InventoryRejected>()
            || event.newer_than::<InventoryReleased>()
            || event.newer_than::<InventoryShipped>())
    }

    /// Reads only what it needs and lets every other event pass: cancellations requested
    /// (inventory's answer ends them), refusals (the order service ends those orders), and
    /// event types added after this service was written, so that the core can grow without
    /// this consumer dead-lettering what it does not know.
    async fn handle(&self, conn: &mut AsyncPgConnection, event: &RawEnvelope) -> Result<Committed, HandleError> {
        let refused = |e: schema::envelope::DecodeError| HandleError::Permanent(e.to_string());
        let owed = match event.event_type.as_str() {
            OrderPlaced::TYPE => {
                let placed = event.decode::<OrderPlaced>().map_err(refused)?;
                store::remember_customer(conn, placed.order_id.0, &placed.customer_id).await?;
                return Ok(Committed::nothing());
            }
            InventoryReserved::TYPE => {
                let reserved = event.decode::<InventoryReserved>().map_err(refused)?;
                (reserved.order_id, Kind::Confirmed, None)
            }
            InventoryRejected::TYPE => {
                let rejected = event.decode::<InventoryRejected>().map_err(refused)?;
                (rejected.order_id, Kind::Rejected, Some(rejected.reason))
            }
            InventoryReleased::TYPE => {
                let released = event.decode::<InventoryReleased>().map_err(refused)?;
                (released.order_id, Kind::Cancelled, None)
            }
            InventoryShipped::TYPE => {
                let shipped = event.decode::<InventoryShipped>().map_err(refused)?;
                (shipped.order_id, Kind::Shipped, None)
            }
            other => {
                tracing::debug!(event_type = other, "no message for this event");
                return Ok(Committed::nothing());
            }
        };
        let (order_id, kind, detail) = owed;
        if event.occurred_at < chrono::Utc::now() - self.stale_after {
            tracing::info!(%order_id, kind = kind.as_str(), occurred_at = %event.occurred_at, "outcome too old to mail");
            return Ok(Committed::nothing());
        }
        let new = store::owe(conn, event.event_id.0, order_id.0, kind, detail.as_deref()).await?;
        tracing::info!(%order_id, kind = kind.as_str(), new, "message owed");
        Ok(Committed::nothing())
    }

    fn after_commit(&self, _event: &RawEnvelope) -> Result<(), InjectedFault> {
        self.owed.notify_one();
        crash::point(crate::AFTER_COMMIT_BEFORE_ACK)
    }
}
