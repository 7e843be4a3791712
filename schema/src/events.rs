//! The event payloads. Order publishes on `orders.events`; inventory on `inventory.events`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::envelope::{DecodeError, Event, RawEnvelope};
use crate::ids::{OrderId, Quantity, Sku};

/// One line of an order: so many units of one SKU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Line {
    pub sku: Sku,
    pub quantity: Quantity,
}

/// A customer placed an order; inventory must reserve every line or none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderPlaced {
    pub order_id: OrderId,
    pub customer_id: String,
    pub lines: Vec<Line>,
}

/// A customer cancelled an order; inventory must release whatever it reserved for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderCancelled {
    pub order_id: OrderId,
}

/// A fulfilment operator started shipping a confirmed order: inventory must take its
/// reserved units out of the warehouse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderReadyToShip {
    pub order_id: OrderId,
}

/// Every line of the order was reserved; stock was deducted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InventoryReserved {
    pub order_id: OrderId,
    pub lines: Vec<Line>,
}

/// Why one line could not be reserved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Shortfall {
    pub sku: Sku,
    pub requested: i32,
    /// What was left; `None` when the SKU is not in the catalogue.
    pub available: Option<i32>,
}

/// The order could not be reserved; nothing was deducted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InventoryRejected {
    pub order_id: OrderId,
    /// For people: which SKUs, how many were asked for, how many were left.
    pub reason: String,
    pub shortfalls: Vec<Shortfall>,
}

/// Stock reserved for a cancelled order was put back (`lines` is empty when nothing had
/// been reserved, e.g. the order had been rejected).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InventoryReleased {
    pub order_id: OrderId,
    pub lines: Vec<Line>,
}

/// The order's reserved units left the warehouse: `reserved` and `on_hand` both went down by
/// each line's quantity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InventoryShipped {
    pub order_id: OrderId,
    pub lines: Vec<Line>,
}

/// What inventory holds for an order, as it tells others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReservationStatus {
    Reserved,
    Rejected,
    Released,
    /// Cancelled before inventory reserved anything.
    Cancelled,
    /// Reserved, then shipped: the stock left the warehouse. Only a refusal of an event
    /// that a shipping-aware order service sends can carry it (decision 0019).
    Shipped,
}

/// An event about the order could not be processed and went to the dead-letter topic;
/// nothing changed for the order. Sent for a refused cancellation, so the order service can
/// end the cancellation from what inventory holds (decision 0011).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InventoryRefused {
    pub order_id: OrderId,
    /// The type of the refused event.
    pub refused_type: RefusedRequest,
    /// For people: why it was refused.
    pub reason: String,
    /// Inventory's decision for the order; none if it has not decided it.
    pub reservation: Option<ReservationStatus>,
}

/// A request inventory can refuse and answer with what it holds: its event's type, as
/// `event_type` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RefusedRequest {
    /// A cancellation (`OrderCancelled`).
    OrderCancelled,
    /// A ship request (`OrderReadyToShip`).
    OrderReadyToShip,
}

impl RefusedRequest {
    /// The request an event of `event_type` is, if inventory answers its refusal.
    pub fn of(event_type: &str) -> Option<Self> {
        match event_type {
            OrderCancelled::TYPE => Some(Self::OrderCancelled),
            OrderReadyToShip::TYPE => Some(Self::OrderReadyToShip),
            _ => None,
        }
    }

    pub fn event_type(self) -> &'static str {
        match self {
            Self::OrderCancelled => OrderCancelled::TYPE,
            Self::OrderReadyToShip => OrderReadyToShip::TYPE,
        }
    }
}

macro_rules! event {
    ($type:ty, $name:literal, $version:literal) => {
        impl Event for $type {
            const TYPE: &'static str = $name;
            const VERSION: u32 = $version;
            fn order_id(&self) -> OrderId {
                self.order_id
            }
        }
    };
}

event!(OrderPlaced, "OrderPlaced", 1);
event!(OrderCancelled, "OrderCancelled", 1);
event!(OrderReadyToShip, "OrderReadyToShip", 1);
event!(InventoryShipped, "InventoryShipped", 1);
event!(InventoryReserved, "InventoryReserved", 1);
event!(InventoryRejected, "InventoryRejected", 1);
event!(InventoryReleased, "InventoryReleased", 1);
event!(InventoryRefused, "InventoryRefused", 1);

impl InventoryRejected {
    /// Builds the event with a reason a person can read, e.g.
    /// `MUG-01: asked for 600, only 500 left; NOPE-1: unknown SKU`.
    pub fn from_shortfalls(order_id: OrderId, shortfalls: Vec<Shortfall>) -> Self {
        let reason = shortfalls
            .iter()
            .map(|s| match s.available {
                Some(left) => format!("{}: asked for {}, only {left} left", s.sku, s.requested),
                None => format!("{}: unknown SKU", s.sku),
            })
            .collect::<Vec<_>>()
            .join("; ");
        Self { order_id, reason, shortfalls }
    }
}

/// Decodes an envelope into one of the listed payload types, by its `event_type`.
macro_rules! topic_events {
    ($(#[$doc:meta])* $name:ident { $($variant:ident($payload:ty)),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum $name {
            $($variant($payload),)+
        }

        impl $name {
            /// The payload of `envelope`, decoded once: a consumer matches on the variant, so
            /// a type it forgets does not compile and a typo cannot hide in a string.
            pub fn decode(envelope: &RawEnvelope) -> Result<Self, DecodeError> {
                $(if envelope.event_type == <$payload as Event>::TYPE {
                    return envelope.decode::<$payload>().map(Self::$variant);
                })+
                Err(DecodeError::UnknownType {
                    expected: concat!($(stringify!($payload), " "),+),
                    found: envelope.event_type.clone(),
                })
            }

            /// Whether `envelope` is an event this build does not understand yet: a type the
            /// topic does not carry today, or a known type at a newer schema version. Such an
            /// event is dead-lettered without ending its order, for a redrive once this
            /// service is upgraded (decision 0017).
            pub fn from_a_newer_build(envelope: &RawEnvelope) -> bool {
                let known = [$(<$payload as Event>::TYPE),+];
                !known.contains(&envelope.event_type.as_str()) $(|| envelope.newer_than::<$payload>())+
            }
        }
    };
}

topic_events! {
    /// Every event on `orders.events`.
    OrderEvent { Placed(OrderPlaced), Cancelled(OrderCancelled), ReadyToShip(OrderReadyToShip) }
}

topic_events! {
    /// Every event on `inventory.events`.
    InventoryEvent {
        Reserved(InventoryReserved),
        Rejected(InventoryRejected),
        Released(InventoryReleased),
        Shipped(InventoryShipped),
        Refused(InventoryRefused),
    }
}

#[cfg(test)]
mod tests {
    use super::{InventoryEvent, OrderCancelled, OrderEvent, RefusedRequest};
    use crate::envelope::{DecodeError, Envelope, RawEnvelope, Trace};
    use crate::ids::OrderId;

    fn raw(event: OrderCancelled) -> RawEnvelope {
        let bytes = serde_json::to_vec(&Envelope::new(event, &Trace { correlation_id: "c".into(), traceparent: None }))
            .expect("serialises");
        RawEnvelope::from_slice(&bytes).expect("reads")
    }

    #[test]
    fn a_refused_request_is_spelt_as_its_events_type_on_the_wire() {
        for request in [RefusedRequest::OrderCancelled, RefusedRequest::OrderReadyToShip] {
            let wire = serde_json::to_value(request).expect("serialises");
            assert_eq!(wire, request.event_type());
            assert_eq!(RefusedRequest::of(request.event_type()), Some(request));
            assert_eq!(serde_json::from_value::<RefusedRequest>(wire).expect("reads"), request);
        }
        assert_eq!(RefusedRequest::of("OrderPlaced"), None);
    }

    #[test]
    fn an_event_decodes_into_its_variant() {
        let cancelled = OrderCancelled { order_id: OrderId::new() };
        assert_eq!(OrderEvent::decode(&raw(cancelled.clone())).ok(), Some(OrderEvent::Cancelled(cancelled)));
    }

    #[test]
    fn a_field_added_by_a_newer_writer_is_ignored() {
        let cancelled = OrderCancelled { order_id: OrderId::new() };
        let mut event = raw(cancelled.clone());
        event.payload["reason_code"] = serde_json::json!("CHANGED_MIND");
        assert_eq!(OrderEvent::decode(&event).ok(), Some(OrderEvent::Cancelled(cancelled)));
        assert!(!OrderEvent::from_a_newer_build(&event));
    }

    #[test]
    fn a_newer_version_or_an_unknown_type_is_from_a_newer_build() {
        let mut event = raw(OrderCancelled { order_id: OrderId::new() });
        event.schema_version += 1;
        assert!(matches!(OrderEvent::decode(&event), Err(DecodeError::UnsupportedVersion { found: 2, .. })));
        assert!(OrderEvent::from_a_newer_build(&event));
        let mut event = raw(OrderCancelled { order_id: OrderId::new() });
        event.event_type = "OrderGiftWrapped".into();
        assert!(OrderEvent::from_a_newer_build(&event));
    }

    #[test]
    fn an_event_of_another_topic_is_an_unknown_type() {
        let error = InventoryEvent::decode(&raw(OrderCancelled { order_id: OrderId::new() })).expect_err("unknown");
        assert!(matches!(&error, DecodeError::UnknownType { found, .. } if found == "OrderCancelled"), "{error}");
    }
}
