//! The order domain: statuses, and the validated request to place an order. A `PlaceOrder`
//! that exists is valid; `PlaceOrder::parse` says precisely what is wrong otherwise, field by
//! field, in words a client developer can act on.
//!
//! One room: the status rules and the request's validation are what the model (`model/`) and
//! the handlers both call; about a third of the file is their tests.

use std::collections::BTreeMap;
use std::fmt;

use schema::events::{Line, ReservationStatus};
use schema::{Quantity, Sku};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// Where an order is in its life: PENDING → CONFIRMED → SHIPPING → SHIPPED, or REJECTED, or
/// (until shipping starts) CANCELLING → CANCELLED. Settled (no answer from inventory awaited):
/// `Confirmed` (until an operator ships it), `Rejected`, `Cancelled`, `Shipped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    /// Accepted; waiting for inventory.
    Pending,
    /// Stock reserved; ready to ship.
    Confirmed,
    /// Inventory could not reserve it; see the rejection reason.
    Rejected,
    /// Cancellation requested; waiting for inventory to release the stock.
    Cancelling,
    /// Cancelled; any reserved stock was put back.
    Cancelled,
    /// A fulfilment operator started shipping; waiting for inventory to take the stock out.
    /// It can no longer be cancelled.
    Shipping,
    /// The stock left the warehouse.
    Shipped,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Confirmed => "CONFIRMED",
            Self::Rejected => "REJECTED",
            Self::Cancelling => "CANCELLING",
            Self::Cancelled => "CANCELLED",
            Self::Shipping => "SHIPPING",
            Self::Shipped => "SHIPPED",
        }
    }

    pub const ALL: [Self; 7] = [
        Self::Pending,
        Self::Confirmed,
        Self::Rejected,
        Self::Cancelling,
        Self::Cancelled,
        Self::Shipping,
        Self::Shipped,
    ];

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// No answer from inventory is awaited: nothing moves the order until someone acts.
    pub fn is_settled(self) -> bool {
        !matches!(self, Self::Pending | Self::Cancelling | Self::Shipping)
    }

    /// The status that matches what inventory holds for an order (`None`: nothing yet): where
    /// a request inventory refused leaves the order (`consumer::end_refused_request`, and the
    /// protocol model).
    pub fn holding(reservation: Option<ReservationStatus>) -> Self {
        match reservation {
            Some(ReservationStatus::Reserved) => Self::Confirmed,
            Some(ReservationStatus::Rejected) => Self::Rejected,
            Some(ReservationStatus::Released | ReservationStatus::Cancelled) => Self::Cancelled,
            Some(ReservationStatus::Shipped) => Self::Shipped,
            None => Self::Pending,
        }
    }
}

/// What moves an order: inventory's answers, the customer's cancellation and the fulfilment
/// operator's ship request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Reserved,
    Rejected,
    Released,
    Shipped,
    CancelRequested,
    ShipRequested,
}

impl Step {
    /// The statuses this step moves an order out of; in any other, it changes nothing.
    pub fn from(self) -> &'static [OrderStatus] {
        use OrderStatus::{Cancelling, Confirmed, Pending, Shipping};
        match self {
            // An order being cancelled ignores the reservation outcome: the release that
            // follows decides its end.
            Self::Reserved | Self::Rejected => &[Pending],
            Self::Released => &[Cancelling],
            Self::Shipped => &[Shipping],
            // Once shipping starts, the stock is on its way out: no cancellation.
            Self::CancelRequested => &[Pending, Confirmed],
            // Only reserved stock can ship.
            Self::ShipRequested => &[Confirmed],
        }
    }

    pub fn to(self) -> OrderStatus {
        match self {
            Self::Reserved => OrderStatus::Confirmed,
            Self::Rejected => OrderStatus::Rejected,
            Self::Released => OrderStatus::Cancelled,
            Self::Shipped => OrderStatus::Shipped,
            Self::CancelRequested => OrderStatus::Cancelling,
            Self::ShipRequested => OrderStatus::Shipping,
        }
    }
}

impl OrderStatus {
    /// The status after `step`, or `None` if the step does not apply in this one. The rule the
    /// service's updates follow (`repository::transition` with [`Step::from`] and [`Step::to`])
    /// and the protocol model (`model/`) checks.
    pub fn after(self, step: Step) -> Option<OrderStatus> {
        step.from().contains(&self).then(|| step.to())
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Field path → what is wrong with it.
pub type FieldErrors = BTreeMap<String, String>;

/// A validated request to place an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceOrder {
    pub customer_id: String,
    pub lines: Vec<Line>,
}

impl PlaceOrder {
    /// An order with more lines than this is refused: no real basket is that large.
    pub const MAX_LINES: usize = 100;
    pub const MAX_CUSTOMER_ID_LEN: usize = platform::auth::MAX_CUSTOMER_ID_LEN;

    /// Validates a JSON body for `customer` (the authenticated caller), collecting every
    /// problem rather than stopping at the first. The body's `customer_id` may be left out;
    /// if given, it must be the caller.
    pub fn parse(body: &Value, customer: &str) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::new();
        let Some(object) = body.as_object() else {
            errors.insert("body".into(), "must be a JSON object with lines".into());
            return Err(errors);
        };
        check_customer_id(object.get("customer_id"), customer, &mut errors);
        let lines = parse_lines(object.get("lines"), &mut errors);
        match lines {
            Some(lines) if errors.is_empty() => Ok(Self { customer_id: customer.to_owned(), lines }),
            _ => Err(errors),
        }
    }

    /// A digest of the request, to tell a retry (same digest) from a different request that
    /// reuses an idempotency key.
    pub fn fingerprint(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.customer_id.as_bytes());
        for line in &self.lines {
            hasher.update([0]);
            hasher.update(line.sku.as_str().as_bytes());
            hasher.update(line.quantity.get().to_be_bytes());
        }
        hex::encode(hasher.finalize())
    }
}

/// A customer id: 1 to 64 characters of letters, digits, '-', '_', '.' or '@'.
pub fn is_customer_id(id: &str) -> bool {
    platform::auth::is_customer_id(id)
}

/// A `customer_id` in the body is optional (the token says who the customer is) but must
/// not contradict the token.
fn check_customer_id(value: Option<&Value>, customer: &str, errors: &mut FieldErrors) {
    let problem = match value {
        None | Some(Value::Null) => return,
        Some(Value::String(id)) if id == customer => return,
        Some(Value::String(id)) if is_customer_id(id) => {
            "names another customer than your token; leave it out (the token says who you are)"
        }
        Some(Value::String(_)) => "must be 1 to 64 characters of letters, digits, '-', '_', '.' or '@'",
        Some(_) => "must be a string",
    };
    errors.insert("customer_id".into(), problem.into());
}

fn parse_lines(value: Option<&Value>, errors: &mut FieldErrors) -> Option<Vec<Line>> {
    let items = match value {
        None | Some(Value::Null) => {
            errors.insert("lines".into(), "is required".into());
            return None;
        }
        Some(Value::Array(items)) => items,
        Some(_) => {
            errors.insert("lines".into(), "must be an array of {sku, quantity}".into());
            return None;
        }
    };
    if items.is_empty() {
        errors.insert("lines".into(), "must contain at least one line".into());
        return None;
    }
    if items.len() > PlaceOrder::MAX_LINES {
        errors.insert("lines".into(), format!("must contain at most {} lines", PlaceOrder::MAX_LINES));
        return None;
    }
    let mut lines = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        if let Some(line) = parse_line(index, item, errors) {
            if lines.iter().any(|l: &Line| l.sku == line.sku) {
                errors.insert(
                    format!("lines[{index}].sku"),
                    format!("{} appears in more than one line; put the total quantity in one line", line.sku),
                );
            }
            lines.push(line);
        }
    }
    Some(lines)
}

fn parse_line(index: usize, item: &Value, errors: &mut FieldErrors) -> Option<Line> {
    let Some(line) = item.as_object() else {
        errors.insert(format!("lines[{index}]"), "must be an object with sku and quantity".into());
        return None;
    };
    let sku = match line.get("sku") {
        None | Some(Value::Null) => Err("is required".to_owned()),
        Some(Value::String(raw)) => Sku::parse(raw).map_err(|e| e.to_string()),
        Some(_) => Err("must be a string".to_owned()),
    };
    let quantity = match line.get("quantity") {
        None | Some(Value::Null) => Err("is required".to_owned()),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(whole) => Quantity::parse(whole).map_err(|e| e.to_string()),
            None if n.is_u64() => Err(format!("must be between 1 and {}", Quantity::MAX)),
            None => Err("must be a whole number".to_owned()),
        },
        Some(_) => Err("must be a number".to_owned()),
    };
    match (sku, quantity) {
        (Ok(sku), Ok(quantity)) => Some(Line { sku, quantity }),
        (sku, quantity) => {
            if let Err(problem) = sku {
                errors.insert(format!("lines[{index}].sku"), problem);
            }
            if let Err(problem) = quantity {
                errors.insert(format!("lines[{index}].quantity"), problem);
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_well_formed_order_is_accepted() {
        let order =
            PlaceOrder::parse(&json!({"customer_id": "c-1", "lines": [{"sku": "MUG-01", "quantity": 2}]}), "c-1")
                .expect("valid");
        assert_eq!(order.lines.len(), 1);
    }

    #[test]
    fn every_problem_is_reported_against_its_field() {
        let errors = PlaceOrder::parse(
            &json!({
                "customer_id": "",
                "lines": [{"sku": "bad sku", "quantity": 0}, {"quantity": 1.5}, "x"]
            }),
            "c",
        )
        .expect_err("invalid");
        assert_eq!(
            errors.keys().map(String::as_str).collect::<Vec<_>>(),
            ["customer_id", "lines[0].quantity", "lines[0].sku", "lines[1].quantity", "lines[1].sku", "lines[2]"]
        );
        assert_eq!(errors["lines[1].quantity"], "must be a whole number");
    }

    #[test]
    fn missing_empty_or_oversized_lines_are_refused() {
        for (body, message) in [
            (json!({"customer_id": "c"}), "is required"),
            (json!({"customer_id": "c", "lines": []}), "must contain at least one line"),
            (json!({"customer_id": "c", "lines": {}}), "must be an array of {sku, quantity}"),
        ] {
            assert_eq!(PlaceOrder::parse(&body, "c").expect_err("invalid")["lines"], message);
        }
        let huge =
            json!({"customer_id": "c", "lines": [{"sku": "MUG-01", "quantity": 99999999999999999999u128 as f64}]});
        assert!(PlaceOrder::parse(&huge, "c").expect_err("invalid").contains_key("lines[0].quantity"));
    }

    #[test]
    fn the_body_may_not_speak_for_another_customer() {
        let order =
            |customer_id: Value| json!({"customer_id": customer_id, "lines": [{"sku": "MUG-01", "quantity": 1}]});
        assert_eq!(PlaceOrder::parse(&order(json!("alice")), "alice").expect("valid").customer_id, "alice");
        assert_eq!(PlaceOrder::parse(&order(Value::Null), "alice").expect("valid").customer_id, "alice");
        let errors = PlaceOrder::parse(&order(json!("bob")), "alice").expect_err("another customer");
        assert!(errors["customer_id"].contains("another customer"), "{errors:?}");
    }

    #[test]
    fn a_sku_twice_in_one_order_is_refused() {
        let errors = PlaceOrder::parse(
            &json!({"customer_id": "c", "lines": [
                {"sku": "MUG-01", "quantity": 1}, {"sku": "MUG-01", "quantity": 2}
            ]}),
            "c",
        )
        .expect_err("invalid");
        assert!(errors["lines[1].sku"].contains("more than one line"));
    }

    #[test]
    fn the_fingerprint_changes_with_any_field() {
        let a = PlaceOrder::parse(&json!({"lines": [{"sku": "MUG-01", "quantity": 1}]}), "c").expect("valid");
        let b = PlaceOrder::parse(&json!({"lines": [{"sku": "MUG-01", "quantity": 2}]}), "c").expect("valid");
        let c = PlaceOrder::parse(&json!({"lines": [{"sku": "MUG-01", "quantity": 1}]}), "d").expect("valid");
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
    }

    #[test]
    fn statuses_round_trip_and_know_if_they_are_settled() {
        for status in ["PENDING", "CONFIRMED", "REJECTED", "CANCELLING", "CANCELLED", "SHIPPING", "SHIPPED"] {
            assert_eq!(OrderStatus::parse(status).map(OrderStatus::as_str), Some(status));
        }
        assert!(OrderStatus::Cancelled.is_settled() && !OrderStatus::Cancelling.is_settled());
        assert!(OrderStatus::Shipped.is_settled() && !OrderStatus::Shipping.is_settled());
    }

    #[test]
    fn shipping_starts_only_from_confirmed_and_ends_cancellation() {
        use OrderStatus::*;
        let shippable: Vec<_> =
            OrderStatus::ALL.into_iter().filter(|s| s.after(Step::ShipRequested).is_some()).collect();
        assert_eq!(shippable, [Confirmed]);
        assert_eq!(Shipping.after(Step::CancelRequested), None);
        assert_eq!(Shipped.after(Step::CancelRequested), None);
        assert_eq!(Shipping.after(Step::Shipped), Some(Shipped));
        assert_eq!(Confirmed.after(Step::Shipped), None, "an answer without a request changes nothing");
    }
}
