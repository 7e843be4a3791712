//! Inventory's rules, without a database: what a placement, a cancellation, a refused
//! placement or a request to ship does, given what inventory decided for the order before.
//! The transactions in [`super`] apply them, and the protocol model (`model/`) checks them in
//! every interleaving.

use schema::events::ReservationStatus;

/// What inventory decided for an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reservation {
    Reserved,
    Rejected,
    Released,
    /// Cancelled before inventory saw the order.
    Cancelled,
    /// Reserved, then shipped: the units left the warehouse.
    Shipped,
}

impl Reservation {
    pub(super) const ALL: [Self; 5] = [Self::Reserved, Self::Rejected, Self::Released, Self::Cancelled, Self::Shipped];

    /// As other services are told it.
    pub fn status(self) -> ReservationStatus {
        match self {
            Self::Reserved => ReservationStatus::Reserved,
            Self::Rejected => ReservationStatus::Rejected,
            Self::Released => ReservationStatus::Released,
            Self::Cancelled => ReservationStatus::Cancelled,
            Self::Shipped => ReservationStatus::Shipped,
        }
    }

    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "RESERVED",
            Self::Rejected => "REJECTED",
            Self::Released => "RELEASED",
            Self::Cancelled => "CANCELLED",
            Self::Shipped => "SHIPPED",
        }
    }
}

/// What a placement does, given what inventory decided for the order before and whether
/// every line fits in the stock left. The rule [`reserve`](super::reserve) applies, and the protocol model
/// (`model/`) checks in every interleaving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Decided before (cancelled before it arrived, or refused): rejected, nothing reserved.
    AlreadyDecided(Reservation),
    /// A line does not fit: rejected, nothing reserved.
    Short,
    /// Every line is reserved.
    Reserve,
}

pub fn decide_placement(earlier: Option<Reservation>, every_line_fits: bool) -> Placement {
    match earlier {
        Some(earlier) => Placement::AlreadyDecided(earlier),
        None if every_line_fits => Placement::Reserve,
        None => Placement::Short,
    }
}

/// What a cancellation does, given what inventory decided for the order before ([`release`](super::release)
/// applies it; so does the protocol model). Every cancellation is answered with a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancellation {
    /// Reserved: the stock goes back and the decision becomes `Released`.
    PutBack,
    /// Not seen yet: remembered as `Cancelled`, so that a placement arriving later is rejected.
    RememberCancelled,
    /// Rejected, released or shipped already: nothing is held to put back.
    Nothing,
}

pub fn decide_cancellation(earlier: Option<Reservation>) -> Cancellation {
    match earlier {
        Some(Reservation::Reserved) => Cancellation::PutBack,
        None => Cancellation::RememberCancelled,
        Some(_) => Cancellation::Nothing,
    }
}

/// What a placement that could not be processed (dead-lettered) does, given what inventory
/// decided for the order before ([`refuse`](super::refuse) applies it; so does the protocol model).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Decided before: nothing changes.
    AlreadyDecided(Reservation),
    /// Not seen yet: rejected, nothing reserved.
    Reject,
}

pub fn decide_refused_placement(earlier: Option<Reservation>) -> Refusal {
    match earlier {
        Some(earlier) => Refusal::AlreadyDecided(earlier),
        None => Refusal::Reject,
    }
}

/// What a request to ship does, given what inventory decided for the order before ([`ship`](super::ship)
/// applies it; so does the protocol model).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shipment {
    /// Reserved: the units leave `reserved` and `on_hand`; the decision becomes `Shipped`.
    TakeOut,
    /// Shipped before: answered again, nothing changes.
    AlreadyShipped,
    /// Nothing is reserved for the order (never seen, rejected, released, cancelled): refused
    /// with what inventory holds, nothing changes.
    Refuse,
}

pub fn decide_shipment(earlier: Option<Reservation>) -> Shipment {
    match earlier {
        Some(Reservation::Reserved) => Shipment::TakeOut,
        Some(Reservation::Shipped) => Shipment::AlreadyShipped,
        _ => Shipment::Refuse,
    }
}
