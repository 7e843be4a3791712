//! The order protocol as a model that [stateright] explores in every interleaving
//! (docs/protocol.md). Customers place orders (retrying after a lost reply, with the same
//! idempotency key) and cancel them; a fulfilment operator ships confirmed orders, racing the
//! cancellations; the order service writes the order and its event in one
//! transaction; a relay publishes each outbox to its topic and deletes what the broker
//! acknowledged; inventory and the order service consume through their inboxes; the relays
//! and the consumers may crash at every step, and Kafka redelivers from the last committed
//! offset.
//!
//! The decisions are the services' own: [`OrderStatus::after`] moves an order,
//! [`decide_placement`], [`decide_cancellation`] and [`decide_shipment`] decide stock, and
//! [`Outcome::of_recording`] is the inbox's apply-or-skip rule. A
//! [`Bug`] plants one of five protocol mistakes, each of which the checker must find.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use inventory::stock::{
    Cancellation, Placement, Reservation, Shipment, decide_cancellation, decide_placement, decide_shipment,
};
use messaging::inbox::Outcome;
use order::domain::{OrderStatus, Step};
use stateright::{Checker as _, HasDiscoveries, Model, Path, Property};

/// A protocol mistake to plant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bug {
    /// A consumer records the event in its inbox in a transaction of its own, after the one
    /// that changed its state.
    InboxOutsideTheTransaction,
    /// The relay deletes an outbox row when it takes it, before the broker acknowledged it.
    RelayDeletesBeforeTheAck,
    /// A consumer commits the offset past an event before its database transaction.
    OffsetCommittedBeforeTheTransaction,
    /// The order service looks the idempotency key up in one step and inserts the order in
    /// another (instead of one transaction under the key's unique index).
    IdempotencyKeyCheckedApart,
    /// The order service lets a customer cancel an order whose shipping has started.
    CancelWhileShipping,
    /// The relay holds the leader lock on one connection and reads and deletes on another:
    /// when the lock's session dies, the worker goes on deleting while another relay leads
    /// (what decision 0001 rules out).
    LockOnAnotherConnection,
}

/// The bounds of one exploration.
#[derive(Debug, Clone)]
pub struct Protocol {
    /// Customers, each placing one order of one unit.
    pub customers: u8,
    /// Units of the one SKU: fewer than customers makes them compete.
    pub stock: u8,
    /// Attempts per placement (the first and its retries after a lost reply)...
    pub attempts: u8,
    /// ...for the first this many customers; the others send once.
    pub retrying: u8,
    /// The first this many customers cancel once they know their order.
    pub cancelling: u8,
    /// The operator ships the orders of the first this many customers once it sees them
    /// confirmed (the first customer's ship races its cancellation).
    pub shipping: u8,
    /// Relay instances per outbox. One leads (holds the outbox's advisory lock); with two,
    /// the leader's database session may also be lost, and the other takes over.
    pub relays: u8,
    /// Crashes of relays and consumers, and lost relay sessions, in all.
    pub crashes: u8,
    pub bug: Option<Bug>,
}

impl Default for Protocol {
    fn default() -> Self {
        Self {
            customers: 2,
            stock: 1,
            attempts: 2,
            retrying: 1,
            cancelling: 1,
            shipping: 1,
            relays: 1,
            crashes: 2,
            bug: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Placed,
    Cancelled,
    ReadyToShip,
    Reserved,
    Rejected,
    Released,
    Shipped,
    /// Inventory refused a ship request; it holds this for the order.
    ShipRefused(Option<Reservation>),
}

/// An event: its id (what an inbox remembers), the order it is about, what it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Event {
    pub id: u8,
    pub order: u8,
    pub kind: Kind,
}

/// The two outboxes, each with its relays and topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Order,
    Inventory,
}

/// A relay instance: while it leads, the first `published` rows of its outbox are on the topic
/// and wait for deletion. With [`Bug::RelayDeletesBeforeTheAck`], rows it took (deleted) wait
/// `in_hand` instead.
///
/// When its database session is lost, it can no longer read or delete (the lock and the work
/// share the session, decision 0001), but the rows it had read may still be in its producer:
/// `stale`, published later, in order. With [`Bug::LockOnAnotherConnection`] it is `detached`
/// instead: it keeps publishing and deleting by its old count.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Relay {
    pub published: u8,
    pub in_hand: Vec<Event>,
    pub stale: Vec<Event>,
    pub detached: bool,
}

/// A consumer of one topic: where it reads, and the half-done step of a planted bug.
///
/// The group commits offsets in the background, so after a crash the consumer may read again
/// from any offset between the last one it is known to have committed (`floor`) and where it
/// was: the model lets a crash choose, instead of interleaving every commit. The services
/// commit only what their transactions finished, so `floor` stays 0 for them: every
/// redelivery is possible.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Consumer {
    pub position: u8,
    pub floor: u8,
    /// [`Bug::InboxOutsideTheTransaction`]: applied, not yet recorded.
    pub unrecorded: Option<u8>,
}

/// One service's database and its consumer: the inbox, the outbox, and a ghost count of how
/// often each event's effect was applied (the property "applied at most once" reads it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Service {
    pub inbox: BTreeSet<u8>,
    pub outbox: Vec<Event>,
    pub relays: Vec<Relay>,
    /// The relay holding the outbox's leader lock, if any.
    pub leader: Option<u8>,
    pub topic: Vec<Event>,
    pub consumer: Consumer,
    pub applied: BTreeMap<u8, u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Customer {
    pub attempts: u8,
    /// A reply reached the customer: it knows its order.
    pub answered: bool,
    pub cancelled: bool,
}

/// A placement request the order service is handling.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Request {
    pub customer: u8,
    /// [`Bug::IdempotencyKeyCheckedApart`]: the key was looked up and not found.
    pub key_absent: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct State {
    pub customers: Vec<Customer>,
    pub requests: Vec<Request>,
    /// The order service's orders: (idempotency key = customer, status); the id is the index.
    pub orders: Vec<(u8, OrderStatus)>,
    /// Order's outbox, relay and `orders.events`; its consumer reads `inventory.events`.
    pub order: Service,
    /// Inventory's outbox, relay and `inventory.events`; its consumer reads `orders.events`.
    pub inventory: Service,
    pub stock: u8,
    /// Inventory's decision per order, the units it holds for it, and the units that left
    /// the warehouse for it.
    pub decisions: BTreeMap<u8, Reservation>,
    pub held: BTreeMap<u8, u8>,
    pub shipped: BTreeMap<u8, u8>,
    /// Orders the operator asked to ship (it asks once per order).
    pub ship_asked: BTreeSet<u8>,
    pub next_event: u8,
    pub crashes: u8,
}

/// A reply to a placement: it reaches the customer, or it is lost (the process died after its
/// commit, the connection dropped) and the customer may try again with the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reply {
    Delivered,
    Lost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// A customer sends (or re-sends) its placement.
    Send(u8),
    /// The order service handles request N in one transaction and replies.
    Handle(u8, Reply),
    /// [`Bug::IdempotencyKeyCheckedApart`]: the lookup of request N's key...
    LookUpKey(u8),
    /// ...and, later, the insert.
    Insert(u8, Reply),
    /// A customer who knows its order cancels it.
    Cancel(u8),
    /// The operator asks for a confirmed order to ship.
    Ship(u8),
    /// Relay N publishes the next row; the broker's acknowledgement comes back.
    Publish(Side, u8),
    /// Relay N deletes the oldest acknowledged row.
    Delete(Side, u8),
    /// [`Bug::RelayDeletesBeforeTheAck`]: relay N deletes the oldest row as it takes it.
    Take(Side, u8),
    /// Relay N, its session lost, publishes a row it had read before.
    PublishStale(Side, u8),
    /// Relay N takes the free leader lock and starts from the oldest row.
    Acquire(Side, u8),
    /// The leader's database session is lost (its lock is released); the process lives on.
    LoseSession(Side, u8),
    /// The consumer of the other side's topic applies the next event through the inbox.
    Apply(Side),
    /// [`Bug::InboxOutsideTheTransaction`]: the inbox row, in a second transaction.
    Record(Side),
    /// [`Bug::OffsetCommittedBeforeTheTransaction`]: the offset past the next event, before
    /// the transaction that applies it.
    CommitAhead(Side),
    /// Relay N crashes and restarts: it forgets what it published but did not delete, and
    /// the next leader publishes it again. (With one relay, it takes the lock back at once.)
    CrashRelay(Side, u8),
    /// A consumer crashes and restarts, reading again from the offset given (one its group
    /// may have committed).
    CrashConsumer(Side, u8),
}

impl State {
    fn service(&mut self, side: Side) -> &mut Service {
        match side {
            Side::Order => &mut self.order,
            Side::Inventory => &mut self.inventory,
        }
    }

    fn view(&self, side: Side) -> &Service {
        match side {
            Side::Order => &self.order,
            Side::Inventory => &self.inventory,
        }
    }

    /// The topic `side`'s consumer reads: the other side's.
    fn input(&self, side: Side) -> &[Event] {
        match side {
            Side::Order => &self.inventory.topic,
            Side::Inventory => &self.order.topic,
        }
    }

    fn emit(&mut self, side: Side, order: u8, kind: Kind) {
        let id = self.next_event;
        self.next_event += 1;
        self.service(side).outbox.push(Event { id, order, kind });
    }

    fn order_of(&self, customer: u8) -> Option<u8> {
        self.orders.iter().position(|(key, _)| *key == customer).map(|i| i as u8)
    }

    /// The order service's transaction for a placement that found no order under its key.
    fn insert_order(&mut self, customer: u8) {
        let id = self.orders.len() as u8;
        self.orders.push((customer, OrderStatus::Pending));
        self.emit(Side::Order, id, Kind::Placed);
    }

    fn reply(&mut self, customer: u8, reply: Reply) {
        if reply == Reply::Delivered {
            self.customers[customer as usize].answered = true;
        }
    }

    /// What an event does in the consuming service's database (inside the inbox transaction).
    fn effect(&mut self, side: Side, event: Event) {
        *self.service(side).applied.entry(event.id).or_default() += 1;
        let order = event.order;
        match (side, event.kind) {
            (Side::Inventory, Kind::Placed) => {
                let earlier = self.decisions.get(&order).copied();
                match decide_placement(earlier, self.stock >= 1) {
                    Placement::Reserve => {
                        self.stock -= 1;
                        *self.held.entry(order).or_default() += 1;
                        self.decisions.insert(order, Reservation::Reserved);
                        self.emit(Side::Inventory, order, Kind::Reserved);
                    }
                    Placement::Short => {
                        self.decisions.insert(order, Reservation::Rejected);
                        self.emit(Side::Inventory, order, Kind::Rejected);
                    }
                    Placement::AlreadyDecided(_) => self.emit(Side::Inventory, order, Kind::Rejected),
                }
            }
            (Side::Inventory, Kind::Cancelled) => {
                match decide_cancellation(self.decisions.get(&order).copied()) {
                    Cancellation::PutBack => {
                        self.stock += self.held.remove(&order).unwrap_or(0);
                        self.decisions.insert(order, Reservation::Released);
                    }
                    Cancellation::RememberCancelled => {
                        self.decisions.insert(order, Reservation::Cancelled);
                    }
                    Cancellation::Nothing => {}
                }
                self.emit(Side::Inventory, order, Kind::Released);
            }
            (Side::Inventory, Kind::ReadyToShip) => {
                let earlier = self.decisions.get(&order).copied();
                match decide_shipment(earlier) {
                    Shipment::TakeOut => {
                        let units = self.held.remove(&order).unwrap_or(0);
                        *self.shipped.entry(order).or_default() += units;
                        self.decisions.insert(order, Reservation::Shipped);
                        self.emit(Side::Inventory, order, Kind::Shipped);
                    }
                    Shipment::AlreadyShipped => self.emit(Side::Inventory, order, Kind::Shipped),
                    Shipment::Refuse => self.emit(Side::Inventory, order, Kind::ShipRefused(earlier)),
                }
            }
            (Side::Order, Kind::ShipRefused(held)) => {
                // The order service's `end_refused_request`: back from SHIPPING to what
                // inventory holds.
                let status = &mut self.orders[order as usize].1;
                if *status == OrderStatus::Shipping {
                    *status = OrderStatus::holding(held.map(Reservation::status));
                }
            }
            (Side::Order, kind) => {
                let step = match kind {
                    Kind::Reserved => Step::Reserved,
                    Kind::Rejected => Step::Rejected,
                    Kind::Released => Step::Released,
                    Kind::Shipped => Step::Shipped,
                    Kind::Placed | Kind::Cancelled | Kind::ReadyToShip | Kind::ShipRefused(_) => return,
                };
                let status = &mut self.orders[order as usize].1;
                if let Some(next) = status.after(step) {
                    *status = next;
                }
            }
            (Side::Inventory, _) => {}
        }
    }
}

impl Protocol {
    fn has(&self, bug: Bug) -> bool {
        self.bug == Some(bug)
    }

    /// A service at the start: its relays, the first of them leading.
    fn service(&self) -> Service {
        Service {
            relays: vec![Relay::default(); usize::from(self.relays.max(1))],
            leader: Some(0),
            ..Service::default()
        }
    }

    /// No step is possible: every request handled, every event published and consumed.
    pub fn is_quiescent(&self, state: &State) -> bool {
        let mut actions = Vec::new();
        self.actions(state, &mut actions);
        actions.is_empty()
    }

    /// Explores every interleaving within the bounds, breadth first on every core, until
    /// `finish_when` (`HasDiscoveries::AnyFailures`: the first, shortest counterexample).
    pub fn check(self, finish_when: HasDiscoveries) -> impl stateright::Checker<Self> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        self.checker().threads(threads).finish_when(finish_when).spawn_bfs().join()
    }
}

impl Model for Protocol {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let customer = Customer { attempts: 0, answered: false, cancelled: false };
        vec![State {
            customers: vec![customer; self.customers as usize],
            requests: Vec::new(),
            orders: Vec::new(),
            order: self.service(),
            inventory: self.service(),
            stock: self.stock,
            decisions: BTreeMap::new(),
            held: BTreeMap::new(),
            shipped: BTreeMap::new(),
            ship_asked: BTreeSet::new(),
            next_event: 0,
            crashes: 0,
        }]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        for (i, customer) in state.customers.iter().enumerate() {
            let i = i as u8;
            let attempts = if i < self.retrying { self.attempts } else { 1 };
            if !customer.answered && customer.attempts < attempts {
                actions.push(Action::Send(i));
            }
            if customer.answered && !customer.cancelled && i < self.cancelling {
                actions.push(Action::Cancel(i));
            }
        }
        // The operator sees an order of one of the first `shipping` customers confirmed.
        for (id, (key, status)) in state.orders.iter().enumerate() {
            let id = id as u8;
            if *key < self.shipping && *status == OrderStatus::Confirmed && !state.ship_asked.contains(&id) {
                actions.push(Action::Ship(id));
            }
        }
        for (n, request) in state.requests.iter().enumerate() {
            let n = n as u8;
            if self.has(Bug::IdempotencyKeyCheckedApart) {
                if request.key_absent {
                    actions.extend([Action::Insert(n, Reply::Delivered), Action::Insert(n, Reply::Lost)]);
                } else {
                    actions.push(Action::LookUpKey(n));
                }
            } else {
                actions.extend([Action::Handle(n, Reply::Delivered), Action::Handle(n, Reply::Lost)]);
            }
        }
        for side in [Side::Order, Side::Inventory] {
            let service = state.view(side);
            for (r, relay) in service.relays.iter().enumerate() {
                let r = r as u8;
                if service.leader == Some(r) || relay.detached {
                    if self.has(Bug::RelayDeletesBeforeTheAck) {
                        if !service.outbox.is_empty() {
                            actions.push(Action::Take(side, r));
                        }
                        if !relay.in_hand.is_empty() {
                            actions.push(Action::Publish(side, r));
                        }
                    } else {
                        if usize::from(relay.published) < service.outbox.len() {
                            actions.push(Action::Publish(side, r));
                        }
                        if relay.published > 0 && !service.outbox.is_empty() {
                            actions.push(Action::Delete(side, r));
                        }
                    }
                }
                if !relay.stale.is_empty() {
                    actions.push(Action::PublishStale(side, r));
                }
                if service.leader.is_none() && !relay.detached && relay.stale.is_empty() {
                    actions.push(Action::Acquire(side, r));
                }
                if state.crashes < self.crashes {
                    actions.push(Action::CrashRelay(side, r));
                    if service.relays.len() > 1 && service.leader == Some(r) {
                        actions.push(Action::LoseSession(side, r));
                    }
                }
            }
            let consumer = &service.consumer;
            let waiting = usize::from(consumer.position) < state.input(side).len();
            let committed_ahead = consumer.floor > consumer.position;
            if consumer.unrecorded.is_some() {
                actions.push(Action::Record(side));
            } else if self.has(Bug::OffsetCommittedBeforeTheTransaction) && waiting && !committed_ahead {
                actions.push(Action::CommitAhead(side));
            } else if waiting {
                actions.push(Action::Apply(side));
            }
            if state.crashes < self.crashes {
                if consumer.floor > consumer.position {
                    actions.push(Action::CrashConsumer(side, consumer.floor));
                } else {
                    actions.extend((consumer.floor..=consumer.position).map(|to| Action::CrashConsumer(side, to)));
                }
            }
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut state = last.clone();
        match action {
            Action::Send(customer) => {
                state.customers[customer as usize].attempts += 1;
                state.requests.push(Request { customer, key_absent: false });
            }
            Action::Handle(n, reply) => {
                // One transaction: the key's unique index makes the lookup and the insert one.
                let request = state.requests.remove(n as usize);
                if state.order_of(request.customer).is_none() {
                    state.insert_order(request.customer);
                }
                state.reply(request.customer, reply);
            }
            Action::LookUpKey(n) => {
                let customer = state.requests[n as usize].customer;
                if state.order_of(customer).is_some() {
                    let request = state.requests.remove(n as usize);
                    state.reply(request.customer, Reply::Delivered);
                } else {
                    state.requests[n as usize].key_absent = true;
                }
            }
            Action::Insert(n, reply) => {
                let request = state.requests.remove(n as usize);
                state.insert_order(request.customer);
                state.reply(request.customer, reply);
            }
            Action::Cancel(customer) => {
                state.customers[customer as usize].cancelled = true;
                let order = state.order_of(customer)?;
                let status = &mut state.orders[order as usize].1;
                let planted = (self.has(Bug::CancelWhileShipping) && *status == OrderStatus::Shipping)
                    .then_some(OrderStatus::Cancelling);
                if let Some(next) = status.after(Step::CancelRequested).or(planted) {
                    *status = next;
                    state.emit(Side::Order, order, Kind::Cancelled);
                }
            }
            Action::Ship(order) => {
                state.ship_asked.insert(order);
                let status = &mut state.orders[order as usize].1;
                if let Some(next) = status.after(Step::ShipRequested) {
                    *status = next;
                    state.emit(Side::Order, order, Kind::ReadyToShip);
                }
            }
            Action::Publish(side, r) => {
                let service = state.service(side);
                let relay = &mut service.relays[usize::from(r)];
                let event = if self.has(Bug::RelayDeletesBeforeTheAck) {
                    relay.in_hand.remove(0)
                } else {
                    relay.published += 1;
                    service.outbox[usize::from(relay.published) - 1]
                };
                service.topic.push(event);
            }
            Action::Delete(side, r) => {
                let service = state.service(side);
                service.outbox.remove(0);
                service.relays[usize::from(r)].published -= 1;
            }
            Action::Take(side, r) => {
                let service = state.service(side);
                let event = service.outbox.remove(0);
                service.relays[usize::from(r)].in_hand.push(event);
            }
            Action::PublishStale(side, r) => {
                let service = state.service(side);
                let event = service.relays[usize::from(r)].stale.remove(0);
                service.topic.push(event);
            }
            Action::Acquire(side, r) => {
                let service = state.service(side);
                service.leader = Some(r);
                service.relays[usize::from(r)].published = 0;
            }
            Action::LoseSession(side, r) => {
                state.crashes += 1;
                let detached = self.has(Bug::LockOnAnotherConnection);
                let service = state.service(side);
                service.leader = None;
                let relay = &mut service.relays[usize::from(r)];
                if detached {
                    relay.detached = true;
                } else {
                    relay.stale = service.outbox[usize::from(relay.published)..].to_vec();
                    relay.published = 0;
                }
            }
            Action::Apply(side) => {
                let event = state.input(side)[usize::from(state.view(side).consumer.position)];
                if self.has(Bug::InboxOutsideTheTransaction) {
                    // Looked up here, applied here, recorded in a later step.
                    if !state.view(side).inbox.contains(&event.id) {
                        state.effect(side, event);
                        state.service(side).consumer.unrecorded = Some(event.id);
                        return Some(state);
                    }
                } else if Outcome::of_recording(state.service(side).inbox.insert(event.id)) == Outcome::Processed {
                    // The service's rule: recorded and applied in one transaction.
                    state.effect(side, event);
                }
                state.service(side).consumer.position += 1;
            }
            Action::Record(side) => {
                let service = state.service(side);
                let id = service.consumer.unrecorded.take()?;
                service.inbox.insert(id);
                service.consumer.position += 1;
            }
            Action::CommitAhead(side) => {
                let consumer = &mut state.service(side).consumer;
                consumer.floor = consumer.position + 1;
            }
            Action::CrashRelay(side, r) => {
                state.crashes += 1;
                let service = state.service(side);
                service.relays[usize::from(r)] = Relay::default();
                if service.relays.len() == 1 {
                    service.leader = Some(0);
                } else if service.leader == Some(r) {
                    service.leader = None;
                }
            }
            Action::CrashConsumer(side, to) => {
                state.crashes += 1;
                let consumer = &mut state.service(side).consumer;
                *consumer = Consumer { position: to, floor: consumer.floor, unrecorded: None };
            }
        }
        Some(state)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut properties = vec![
            Property::always("a retried request never creates a second order", |_: &Protocol, s: &State| {
                let keys: BTreeSet<u8> = s.orders.iter().map(|(key, _)| *key).collect();
                keys.len() == s.orders.len()
            }),
            Property::always(
                "stock is never deducted twice for an order, and every unit is accounted for",
                |m: &Protocol, s: &State| {
                    let sum = |units: &BTreeMap<u8, u8>| units.values().map(|&u| u16::from(u)).sum::<u16>();
                    s.orders.iter().enumerate().all(|(id, _)| {
                        let id = id as u8;
                        s.held.get(&id).copied().unwrap_or(0) + s.shipped.get(&id).copied().unwrap_or(0) <= 1
                    }) && u16::from(s.stock) + sum(&s.held) + sum(&s.shipped) == u16::from(m.stock)
                },
            ),
            Property::always("every event's effect is applied at most once", |_: &Protocol, s: &State| {
                s.order.applied.values().chain(s.inventory.applied.values()).all(|&n| n <= 1)
            }),
            Property::always(
                "a confirmed order holds its stock; a rejected or cancelled one holds none",
                |_: &Protocol, s: &State| {
                    s.orders.iter().enumerate().all(|(id, (_, status))| {
                        let held = s.held.get(&(id as u8)).copied().unwrap_or(0);
                        let shipped = s.shipped.get(&(id as u8)).copied().unwrap_or(0);
                        match status {
                            OrderStatus::Confirmed => held == 1 && shipped == 0,
                            OrderStatus::Rejected | OrderStatus::Cancelled => held == 0 && shipped == 0,
                            OrderStatus::Shipping => held + shipped == 1,
                            OrderStatus::Shipped => held == 0 && shipped == 1,
                            OrderStatus::Pending | OrderStatus::Cancelling => shipped == 0,
                        }
                    })
                },
            ),
            Property::always(
                "nothing ships without a reservation, and a shipped order is never cancelled",
                |_: &Protocol, s: &State| {
                    s.shipped.iter().all(|(id, &units)| {
                        units == 0
                            || (s.decisions.get(id) == Some(&Reservation::Shipped)
                                && matches!(s.orders[*id as usize].1, OrderStatus::Shipping | OrderStatus::Shipped))
                    })
                },
            ),
            // Liveness, when crashes stop: with crashes bounded every path ends in a state
            // where nothing more can happen, and there every accepted order is final.
            Property::always(
                "once nothing more can happen, every accepted order is final",
                |m: &Protocol, s: &State| !m.is_quiescent(s) || s.orders.iter().all(|(_, status)| status.is_settled()),
            ),
            Property::sometimes("an order is confirmed", |_: &Protocol, s: &State| {
                s.orders.iter().any(|(_, status)| *status == OrderStatus::Confirmed)
            }),
            Property::sometimes("an order shipped", |_: &Protocol, s: &State| {
                s.orders.iter().any(|(_, status)| *status == OrderStatus::Shipped)
            }),
            Property::sometimes("a cancelled order gave its unit to another", |_: &Protocol, s: &State| {
                s.orders.iter().any(|(_, status)| *status == OrderStatus::Cancelled)
                    && s.orders.iter().any(|(_, status)| *status == OrderStatus::Confirmed)
            }),
        ];
        if self.relays > 1 {
            properties.push(Property::sometimes(
                "a relay took over while the one before still had rows to publish",
                |_: &Protocol, s: &State| {
                    [&s.order, &s.inventory].iter().any(|service| {
                        service.leader.is_some_and(|leader| {
                            service
                                .relays
                                .iter()
                                .enumerate()
                                .any(|(r, relay)| r != usize::from(leader) && !relay.stale.is_empty())
                        })
                    })
                },
            ));
        }
        properties
    }
}

/// A path as numbered steps a person can follow: each action, then what it changed.
pub fn explain(path: &Path<State, Action>) -> String {
    let mut out = String::new();
    let steps = path.clone().into_vec();
    for (n, (state, action)) in steps.iter().enumerate() {
        let Some(action) = action else { continue };
        let after = &steps[n + 1].0;
        let _ = writeln!(out, "{:>2}. {}", n + 1, describe(state, *action));
        let orders: Vec<String> =
            after.orders.iter().enumerate().map(|(id, (key, st))| format!("order {id} (key {key}) {st}")).collect();
        let _ = writeln!(
            out,
            "    orders: [{}]; outboxes {}/{}; stock {}, held {:?}, shipped {:?}; orders.events {:?}; inventory.events {:?}",
            orders.join(", "),
            after.order.outbox.len(),
            after.inventory.outbox.len(),
            after.stock,
            after.held,
            after.shipped,
            after.order.topic.iter().map(|e| (e.id, e.order, e.kind)).collect::<Vec<_>>(),
            after.inventory.topic.iter().map(|e| (e.id, e.order, e.kind)).collect::<Vec<_>>(),
        );
    }
    out
}

fn describe(state: &State, action: Action) -> String {
    let consumer = |side: Side| match side {
        Side::Order => "order's consumer (inventory.events)",
        Side::Inventory => "inventory's consumer (orders.events)",
    };
    let relay = |side: Side| match side {
        Side::Order => "order's relay",
        Side::Inventory => "inventory's relay",
    };
    match action {
        Action::Send(c) => {
            format!("customer {c} sends its placement (attempt {})", state.customers[c as usize].attempts + 1)
        }
        Action::Handle(n, reply) => {
            format!(
                "order service handles customer {}'s request in one transaction; reply {reply:?}",
                state.requests[n as usize].customer
            )
        }
        Action::LookUpKey(n) => {
            format!("order service looks up customer {}'s key", state.requests[n as usize].customer)
        }
        Action::Insert(n, reply) => {
            format!("order service inserts customer {}'s order; reply {reply:?}", state.requests[n as usize].customer)
        }
        Action::Cancel(c) => format!("customer {c} cancels its order"),
        Action::Ship(order) => format!("the operator ships order {order}"),
        Action::Publish(side, r) => format!("{} {r} publishes a row; the broker acknowledges", relay(side)),
        Action::Delete(side, r) => format!("{} {r} deletes the oldest acknowledged row", relay(side)),
        Action::Take(side, r) => format!("{} {r} takes a row and deletes it before publishing", relay(side)),
        Action::PublishStale(side, r) => {
            format!("{} {r}, its session gone, publishes a row it had read before", relay(side))
        }
        Action::Acquire(side, r) => format!("{} {r} takes the leader lock; it starts from the oldest row", relay(side)),
        Action::LoseSession(side, r) => {
            format!("{} {r} loses its database session, and with it the leader lock", relay(side))
        }
        Action::Apply(side) => {
            let event = state.input(side)[usize::from(state.view(side).consumer.position)];
            format!("{} applies event {} ({:?} of order {})", consumer(side), event.id, event.kind, event.order)
        }
        Action::Record(side) => format!("{} records the event in its inbox, separately", consumer(side)),
        Action::CommitAhead(side) => {
            format!("{} commits the offset past the next event, before its transaction", consumer(side))
        }
        Action::CrashRelay(side, r) => format!("{} {r} crashes and restarts", relay(side)),
        Action::CrashConsumer(side, to) => {
            format!("{} crashes; it reads again from offset {to}, committed by its group", consumer(side))
        }
    }
}
