//! What the order service records beyond HTTP: orders by outcome, and how long an order
//! takes from acceptance to its final status.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;

use platform::metrics::{Metrics, latency_histogram};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// accepted, confirmed, rejected, cancelled, ship_requested or shipped.
    pub outcome: &'static str,
}

#[derive(Clone)]
pub struct OrderMetrics {
    orders: Family<OutcomeLabels, Counter>,
    end_to_end: Histogram,
}

impl OrderMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let this = Self { orders: Family::default(), end_to_end: latency_histogram() };
        metrics.register(
            "orders",
            "Orders by outcome (accepted, then confirmed, rejected or cancelled; ship_requested, then shipped)",
            this.orders.clone(),
        );
        metrics.register_with_unit(
            "order_end_to_end",
            "From acceptance to CONFIRMED or REJECTED",
            Unit::Seconds,
            this.end_to_end.clone(),
        );
        this
    }

    pub fn accepted(&self) {
        self.orders.get_or_create(&OutcomeLabels { outcome: "accepted" }).inc();
    }

    /// A fulfilment operator started shipping an order.
    pub fn ship_requested(&self) {
        self.orders.get_or_create(&OutcomeLabels { outcome: "ship_requested" }).inc();
    }

    /// An order reached a final status `seconds` after it was accepted.
    pub fn finished(&self, outcome: &'static str, seconds: Option<f64>) {
        self.orders.get_or_create(&OutcomeLabels { outcome }).inc();
        if let Some(seconds) = seconds {
            self.end_to_end.observe(seconds.max(0.0));
        }
    }
}
