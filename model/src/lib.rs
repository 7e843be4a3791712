//! The order protocol as a model that [stateright] explores in every interleaving
//! (docs/protocol.md).
//!
//! One room, over 300 lines: it is one state machine, whose state, steps and properties are
//! read together; splitting them would scatter each rule over three places.
//!
//! Customers place orders (retrying after a lost reply, with the same
//! idempotency key) and cancel them; a fulfilment operator ships confirmed orders, racing the
//! cancellations; the order service writes the order and its event in one transaction, which
//! may commit after later ones; a relay publishes each outbox log to its topic in windows
//! between snapshots and records its position; inventory and the order service consume
//! through their inboxes; inventory dead-letters events it cannot apply, and an operator
//! redrives them and replays a topic; the relays and the consumers may crash at every step,
//! and Kafka redelivers from the last committed offset.
//!
//! The decisions are the services' own: [`OrderStatus::after`] moves an order,
//! [`decide_placement`], [`decide_cancellation`], [`decide_shipment`] and
//! [`decide_refused_placement`] decide stock, and [`Outcome::of_recording`] is the inbox's
//! apply-or-skip rule. A [`Bug`] plants one protocol mistake, which the checker must find.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use inventory::stock::{
    Cancellation, Placement, Refusal, Reservation, Shipment, decide_cancellation, decide_placement,
    decide_refused_placement, decide_shipment,
};
use messaging::inbox::Outcome;
use order::domain::{OrderStatus, Step};
use stateright::{Checker as _, HasDiscoveries, Model, Path, Property};

pub mod failover;

/// Explores every interleaving of `model` within its bounds, breadth first on every core,
/// until `finish_when` (`HasDiscoveries::AnyFailures`: the first, shortest counterexample).
fn explore<M>(model: M, finish_when: HasDiscoveries) -> impl stateright::Checker<M>
where
    M: Model + Send + Sync + 'static,
    M::State: std::hash::Hash + Send + Sync + Clone + PartialEq + 'static,
    M::Action: Clone + PartialEq,
{
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    model.checker().threads(threads).finish_when(finish_when).spawn_bfs().join()
}

/// A protocol mistake to plant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bug {
    /// A consumer records the event in its inbox in a transaction of its own, after the one
    /// that changed its state.
    InboxOutsideTheTransaction,
    /// The relay records its position past an outbox row when it takes it, before the broker
    /// acknowledged it.
    PositionBeforeTheAck,
    /// The relay's position is the id of the last row it published, and it reads on after
    /// it, instead of reading windows between snapshots: a row whose transaction drew a lower
    /// id and committed later is skipped.
    PositionById,
    /// A consumer commits the offset past an event before its database transaction.
    OffsetCommittedBeforeTheTransaction,
    /// The order service looks the idempotency key up in one step and inserts the order in
    /// another (instead of one transaction under the key's unique index).
    IdempotencyKeyCheckedApart,
    /// The order service lets a customer cancel an order whose shipping has started.
    CancelWhileShipping,
    /// Inventory reserves stock for a placement that arrives after the order's cancellation
    /// (a placement dead-lettered, the order cancelled, the placement redriven).
    PlacementAfterCancellationReserves,
    /// Inventory reserves a placement whether or not the units are there.
    ReserveWithoutStock,
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
    /// Whether a placement's transaction writes in one step and commits in another, so that
    /// another placement may draw a later outbox id and commit first.
    pub late_commits: bool,
    /// Events inventory may dead-letter, in all: refused (recorded in its inbox and answered)
    /// or from a newer build (neither, to be applied when an operator redrives it).
    pub dead_letters: u8,
    /// Times an operator may replay `orders.events` from its start through inventory's inbox.
    pub replays: u8,
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
            late_commits: false,
            dead_letters: 0,
            replays: 0,
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
    /// Inventory refused a request (`InventoryRefused`); it holds this for the order.
    Refused(Refusable, Option<Reservation>),
}

/// The requests inventory may refuse, answering with what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusable {
    Cancellation,
    Shipment,
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

/// An outbox row: its event, and whether the transaction that wrote it has committed. Rows
/// are kept in the order their ids were drawn, and never removed: the outbox is a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Row {
    pub event: Event,
    pub committed: bool,
}

/// How far an outbox is published, as relay/src/window.rs keeps it, in a form that names
/// each position once: the rows published (by event id; one row per transaction here), and
/// the rows left of the open window, in id order. A window holds the rows of the transactions
/// that committed between two snapshots: every row committed before the window opened is in
/// `published` already. With [`Bug::PositionById`], only `taken` counts: every row before it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Position {
    pub published: BTreeSet<u8>,
    pub window: Vec<u8>,
    pub taken: u8,
}

/// A relay instance. While it leads, `cursor` says what it has published (read, and the
/// broker acknowledged) since it took the outbox; the outbox's recorded position lags it until
/// the relay records it. With [`Bug::PositionBeforeTheAck`], rows it took (and recorded past)
/// wait `in_hand` to be published.
///
/// When its database session is lost, it can no longer read or record (the lease and the work
/// share the session), but the rows it had read may still be in its producer: `stale`,
/// published later, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Relay {
    pub cursor: Position,
    pub in_hand: Vec<Event>,
    pub stale: Vec<Event>,
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

/// One service's database and its consumer: the inbox, the outbox log and its recorded
/// position, the dead letters of the topic it consumes, and a ghost count of how often each
/// event's effect was applied (the property "applied at most once" reads it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Service {
    pub inbox: BTreeSet<u8>,
    pub outbox: Vec<Row>,
    pub recorded: Position,
    pub relays: Vec<Relay>,
    /// The relay holding the outbox's lease, if any.
    pub leader: Option<u8>,
    pub topic: Vec<Event>,
    pub consumer: Consumer,
    pub applied: BTreeMap<u8, u8>,
    pub dead_letters: Vec<Event>,
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
    /// With late commits: the order its transaction wrote, not yet committed.
    pub writing: Option<u8>,
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
    /// A unit was taken out that the stock did not have (the count would have gone below 0).
    pub oversold: bool,
    /// Orders the operator asked to ship (it asks once per order).
    pub ship_asked: BTreeSet<u8>,
    pub next_event: u8,
    pub crashes: u8,
    pub dead_lettered: u8,
    pub replayed: u8,
}

/// A reply to a placement: it reaches the customer, or it is lost (the process died after its
/// commit, the connection dropped) and the customer may try again with the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reply {
    Delivered,
    Lost,
}

/// Why inventory dead-letters an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadLetter {
    /// It can never be applied: recorded in the inbox and answered, in one transaction.
    Refused,
    /// It comes from a newer build: neither recorded nor answered, to be applied when an
    /// operator redrives it after the upgrade.
    FromANewerBuild,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// A customer sends (or re-sends) its placement.
    Send(u8),
    /// The order service handles request N in one transaction and replies.
    Handle(u8, Reply),
    /// With late commits: request N's transaction writes the order and its outbox row...
    Write(u8),
    /// ...and later commits, and replies.
    Commit(u8, Reply),
    /// [`Bug::IdempotencyKeyCheckedApart`]: the lookup of request N's key...
    LookUpKey(u8),
    /// ...and, later, the insert.
    Insert(u8, Reply),
    /// A customer who knows its order cancels it.
    Cancel(u8),
    /// The operator asks for a confirmed order to ship.
    Ship(u8),
    /// Relay N publishes the next row of its window (opening the next window if this one is
    /// done); the broker's acknowledgement comes back.
    Publish(Side, u8),
    /// Relay N records its position.
    Record(Side, u8),
    /// [`Bug::PositionBeforeTheAck`]: relay N takes the next row and records its position
    /// past it, before publishing it.
    Take(Side, u8),
    /// Relay N, its session lost, publishes a row it had read before.
    PublishStale(Side, u8),
    /// Relay N takes the free lease and starts from the recorded position.
    Acquire(Side, u8),
    /// The leader's database session is lost (its lease goes); the process lives on.
    LoseSession(Side, u8),
    /// The consumer of the other side's topic applies the next event through the inbox.
    Apply(Side),
    /// Inventory's consumer dead-letters the next event of `orders.events`.
    DeadLetter(DeadLetter),
    /// An operator publishes the oldest dead letter back to `orders.events`.
    Redrive,
    /// An operator replays `orders.events` from its start through inventory's inbox.
    Replay,
    /// [`Bug::InboxOutsideTheTransaction`]: the inbox row, in a second transaction.
    Record2(Side),
    /// [`Bug::OffsetCommittedBeforeTheTransaction`]: the offset past the next event, before
    /// the transaction that applies it.
    CommitAhead(Side),
    /// Relay N crashes and restarts: it forgets what it published since it last recorded,
    /// and the next leader publishes it again. (With one relay, it takes the lease back at
    /// once.)
    CrashRelay(Side, u8),
    /// A consumer crashes and restarts, reading again from the offset given (one its group
    /// may have committed).
    CrashConsumer(Side, u8),
}

impl Service {
    /// The row a relay at `position` publishes next, and its position after it: the next row
    /// of the open window; when the window has none left, the first of a new one, which a
    /// snapshot taken now cuts: the rows committed since the last. `None`: nothing committed
    /// is left to publish.
    fn next_row(&self, position: &Position, by_id: bool) -> Option<(Event, Position)> {
        if by_id {
            let index = (usize::from(position.taken)..self.outbox.len()).find(|&i| self.outbox[i].committed)?;
            return Some((self.outbox[index].event, Position { taken: index as u8 + 1, ..Position::default() }));
        }
        let mut next = position.clone();
        if next.window.is_empty() {
            next.window = self
                .outbox
                .iter()
                .filter(|row| row.committed && !next.published.contains(&row.event.id))
                .map(|row| row.event.id)
                .collect();
        }
        let id = *next.window.first()?;
        next.window.remove(0);
        next.published.insert(id);
        if self.outbox.iter().all(|row| row.committed) {
            // No transaction is open: every later row commits after these and has a higher id,
            // so the rest of this window comes first in the next one too. One state, not two.
            next.window.clear();
        }
        let event = self.outbox.iter().find(|row| row.event.id == id)?.event;
        Some((event, next))
    }

    /// What a relay at `position` would publish, in order, if nothing else happened.
    fn unpublished(&self, position: &Position, by_id: bool) -> Vec<Event> {
        let mut events = Vec::new();
        let mut at = position.clone();
        while let Some((event, next)) = self.next_row(&at, by_id) {
            events.push(event);
            at = next;
        }
        events
    }
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

    /// Writes an event to `side`'s outbox, committed with it or (`committed: false`) later.
    fn emit(&mut self, side: Side, order: u8, kind: Kind, committed: bool) -> u8 {
        let id = self.next_event;
        self.next_event += 1;
        self.service(side).outbox.push(Row { event: Event { id, order, kind }, committed });
        id
    }

    fn order_of(&self, customer: u8) -> Option<u8> {
        self.orders.iter().position(|(key, _)| *key == customer).map(|i| i as u8)
    }

    /// The order service's transaction for a placement that found no order under its key.
    fn insert_order(&mut self, customer: u8, committed: bool) -> u8 {
        let id = self.orders.len() as u8;
        self.orders.push((customer, OrderStatus::Pending));
        self.emit(Side::Order, id, Kind::Placed, committed);
        id
    }

    fn reply(&mut self, customer: u8, reply: Reply) {
        if reply == Reply::Delivered {
            self.customers[customer as usize].answered = true;
        }
    }

    /// Takes `units` out of the stock; a count that would go below zero is recorded as a
    /// breach (the property "stock never goes below zero" reports it) instead of wrapping or
    /// panicking, in any build.
    fn take_stock(&mut self, units: u8) {
        match self.stock.checked_sub(units) {
            Some(left) => self.stock = left,
            None => {
                self.stock = 0;
                self.oversold = true;
            }
        }
    }

    /// What an event does in the consuming service's database (inside the inbox transaction).
    fn effect(&mut self, side: Side, event: Event, bug: Option<Bug>) {
        *self.service(side).applied.entry(event.id).or_default() += 1;
        let order = event.order;
        match (side, event.kind) {
            (Side::Inventory, Kind::Placed) => {
                let earlier = self.decisions.get(&order).copied();
                let fits = self.stock >= 1 || bug == Some(Bug::ReserveWithoutStock);
                let placement = match decide_placement(earlier, fits) {
                    Placement::AlreadyDecided(Reservation::Cancelled)
                        if bug == Some(Bug::PlacementAfterCancellationReserves) =>
                    {
                        Placement::Reserve
                    }
                    placement => placement,
                };
                match placement {
                    Placement::Reserve => {
                        self.take_stock(1);
                        *self.held.entry(order).or_default() += 1;
                        self.decisions.insert(order, Reservation::Reserved);
                        self.emit(Side::Inventory, order, Kind::Reserved, true);
                    }
                    Placement::Short => {
                        self.decisions.insert(order, Reservation::Rejected);
                        self.emit(Side::Inventory, order, Kind::Rejected, true);
                    }
                    Placement::AlreadyDecided(_) => {
                        self.emit(Side::Inventory, order, Kind::Rejected, true);
                    }
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
                self.emit(Side::Inventory, order, Kind::Released, true);
            }
            (Side::Inventory, Kind::ReadyToShip) => {
                let earlier = self.decisions.get(&order).copied();
                match decide_shipment(earlier) {
                    Shipment::TakeOut => {
                        let units = self.held.remove(&order).unwrap_or(0);
                        *self.shipped.entry(order).or_default() += units;
                        self.decisions.insert(order, Reservation::Shipped);
                        self.emit(Side::Inventory, order, Kind::Shipped, true);
                    }
                    Shipment::AlreadyShipped => {
                        self.emit(Side::Inventory, order, Kind::Shipped, true);
                    }
                    Shipment::Refuse => {
                        self.emit(Side::Inventory, order, Kind::Refused(Refusable::Shipment, earlier), true);
                    }
                }
            }
            (Side::Order, Kind::Refused(request, held)) => {
                // The order service's `end_refused_request`: back from CANCELLING or SHIPPING
                // to what inventory holds.
                let waiting_in = match request {
                    Refusable::Cancellation => OrderStatus::Cancelling,
                    Refusable::Shipment => OrderStatus::Shipping,
                };
                let status = &mut self.orders[order as usize].1;
                if *status == waiting_in {
                    *status = OrderStatus::holding(held.map(Reservation::status));
                }
            }
            (Side::Order, kind) => {
                let step = match kind {
                    Kind::Reserved => Step::Reserved,
                    Kind::Rejected => Step::Rejected,
                    Kind::Released => Step::Released,
                    Kind::Shipped => Step::Shipped,
                    Kind::Placed | Kind::Cancelled | Kind::ReadyToShip | Kind::Refused(..) => return,
                };
                let status = &mut self.orders[order as usize].1;
                if let Some(next) = status.after(step) {
                    *status = next;
                }
            }
            (Side::Inventory, _) => {}
        }
    }

    /// Inventory's answer to an event it refused (dead-lettered), inside the transaction that
    /// records it (`Handler::refused`): a placement is rejected unless decided before
    /// (`stock::refuse`); a cancellation or a ship request is answered with what inventory
    /// holds (`stock::report_refusal`).
    fn refused(&mut self, event: Event) {
        let order = event.order;
        let held = self.decisions.get(&order).copied();
        match event.kind {
            Kind::Placed => {
                if decide_refused_placement(held) == Refusal::Reject {
                    self.decisions.insert(order, Reservation::Rejected);
                    self.emit(Side::Inventory, order, Kind::Rejected, true);
                }
            }
            Kind::Cancelled => {
                self.emit(Side::Inventory, order, Kind::Refused(Refusable::Cancellation, held), true);
            }
            Kind::ReadyToShip => {
                self.emit(Side::Inventory, order, Kind::Refused(Refusable::Shipment, held), true);
            }
            Kind::Reserved | Kind::Rejected | Kind::Released | Kind::Shipped | Kind::Refused(..) => {}
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

    /// Explores every interleaving within the bounds: see [`explore`].
    pub fn check(self, finish_when: HasDiscoveries) -> impl stateright::Checker<Self> {
        explore(self, finish_when)
    }

    fn relay_actions(&self, state: &State, side: Side, actions: &mut Vec<Action>) {
        let service = state.view(side);
        let by_id = self.has(Bug::PositionById);
        for (r, relay) in service.relays.iter().enumerate() {
            let r = r as u8;
            if service.leader == Some(r) {
                let more = service.next_row(&relay.cursor, by_id).is_some();
                if self.has(Bug::PositionBeforeTheAck) {
                    if more {
                        actions.push(Action::Take(side, r));
                    }
                    if !relay.in_hand.is_empty() {
                        actions.push(Action::Publish(side, r));
                    }
                } else {
                    if more {
                        actions.push(Action::Publish(side, r));
                    }
                    if relay.cursor != service.recorded {
                        actions.push(Action::Record(side, r));
                    }
                }
            }
            if !relay.stale.is_empty() {
                actions.push(Action::PublishStale(side, r));
            }
            if service.leader.is_none() && relay.stale.is_empty() {
                actions.push(Action::Acquire(side, r));
            }
            if state.crashes < self.crashes {
                actions.push(Action::CrashRelay(side, r));
                if service.relays.len() > 1 && service.leader == Some(r) {
                    actions.push(Action::LoseSession(side, r));
                }
            }
        }
    }

    fn consumer_actions(&self, state: &State, side: Side, actions: &mut Vec<Action>) {
        let consumer = &state.view(side).consumer;
        let waiting = usize::from(consumer.position) < state.input(side).len();
        let committed_ahead = consumer.floor > consumer.position;
        if consumer.unrecorded.is_some() {
            actions.push(Action::Record2(side));
        } else if self.has(Bug::OffsetCommittedBeforeTheTransaction) && waiting && !committed_ahead {
            actions.push(Action::CommitAhead(side));
        } else if waiting {
            actions.push(Action::Apply(side));
            if side == Side::Inventory && state.dead_lettered < self.dead_letters {
                actions
                    .extend([Action::DeadLetter(DeadLetter::Refused), Action::DeadLetter(DeadLetter::FromANewerBuild)]);
            }
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
            oversold: false,
            ship_asked: BTreeSet::new(),
            next_event: 0,
            crashes: 0,
            dead_lettered: 0,
            replayed: 0,
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
            } else if self.late_commits {
                if request.writing.is_some() {
                    actions.extend([Action::Commit(n, Reply::Delivered), Action::Commit(n, Reply::Lost)]);
                } else if !state
                    .requests
                    .iter()
                    .any(|other| other.customer == request.customer && other.writing.is_some())
                {
                    // A second attempt waits on the key's unique index while the first writes.
                    actions.push(Action::Write(n));
                }
            } else {
                actions.extend([Action::Handle(n, Reply::Delivered), Action::Handle(n, Reply::Lost)]);
            }
        }
        for side in [Side::Order, Side::Inventory] {
            self.relay_actions(state, side, actions);
            self.consumer_actions(state, side, actions);
        }
        if !state.inventory.dead_letters.is_empty() {
            actions.push(Action::Redrive);
        }
        if state.replayed < self.replays && state.inventory.consumer.position > 0 {
            actions.push(Action::Replay);
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut state = last.clone();
        let by_id = self.has(Bug::PositionById);
        match action {
            Action::Send(customer) => {
                state.customers[customer as usize].attempts += 1;
                state.requests.push(Request { customer, key_absent: false, writing: None });
            }
            Action::Handle(n, reply) => {
                // One transaction: the key's unique index makes the lookup and the insert one.
                let request = state.requests.remove(n as usize);
                if state.order_of(request.customer).is_none() {
                    state.insert_order(request.customer, true);
                }
                state.reply(request.customer, reply);
            }
            Action::Write(n) => {
                let customer = state.requests[n as usize].customer;
                if state.order_of(customer).is_some() {
                    // Found under its key: no transaction left open, the same order back.
                    let request = state.requests.remove(n as usize);
                    state.reply(request.customer, Reply::Delivered);
                } else {
                    let order = state.insert_order(customer, false);
                    state.requests[n as usize].writing = Some(order);
                }
            }
            Action::Commit(n, reply) => {
                let request = state.requests.remove(n as usize);
                let order = request.writing?;
                for row in &mut state.order.outbox {
                    if row.event.order == order && row.event.kind == Kind::Placed {
                        row.committed = true;
                    }
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
                state.insert_order(request.customer, true);
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
                    state.emit(Side::Order, order, Kind::Cancelled, true);
                }
            }
            Action::Ship(order) => {
                state.ship_asked.insert(order);
                let status = &mut state.orders[order as usize].1;
                if let Some(next) = status.after(Step::ShipRequested) {
                    *status = next;
                    state.emit(Side::Order, order, Kind::ReadyToShip, true);
                }
            }
            Action::Publish(side, r) => {
                let service = state.service(side);
                let event = if self.has(Bug::PositionBeforeTheAck) {
                    service.relays[usize::from(r)].in_hand.remove(0)
                } else {
                    let (event, next) = service.next_row(&service.relays[usize::from(r)].cursor, by_id)?;
                    service.relays[usize::from(r)].cursor = next;
                    event
                };
                service.topic.push(event);
            }
            Action::Record(side, r) => {
                let service = state.service(side);
                service.recorded = service.relays[usize::from(r)].cursor.clone();
            }
            Action::Take(side, r) => {
                let service = state.service(side);
                let (event, next) = service.next_row(&service.relays[usize::from(r)].cursor, by_id)?;
                let relay = &mut service.relays[usize::from(r)];
                relay.cursor = next.clone();
                relay.in_hand.push(event);
                service.recorded = next;
            }
            Action::PublishStale(side, r) => {
                let service = state.service(side);
                let event = service.relays[usize::from(r)].stale.remove(0);
                service.topic.push(event);
            }
            Action::Acquire(side, r) => {
                let service = state.service(side);
                service.leader = Some(r);
                service.relays[usize::from(r)].cursor = service.recorded.clone();
            }
            Action::LoseSession(side, r) => {
                state.crashes += 1;
                let service = state.service(side);
                service.leader = None;
                let stale = service.unpublished(&service.relays[usize::from(r)].cursor, by_id);
                let relay = &mut service.relays[usize::from(r)];
                relay.stale = stale;
                relay.cursor = Position::default();
            }
            Action::Apply(side) => {
                let event = state.input(side)[usize::from(state.view(side).consumer.position)];
                if self.has(Bug::InboxOutsideTheTransaction) {
                    // Looked up here, applied here, recorded in a later step.
                    if !state.view(side).inbox.contains(&event.id) {
                        state.effect(side, event, self.bug);
                        state.service(side).consumer.unrecorded = Some(event.id);
                        return Some(state);
                    }
                } else if Outcome::of_recording(state.service(side).inbox.insert(event.id)) == Outcome::Processed {
                    // The service's rule: recorded and applied in one transaction.
                    state.effect(side, event, self.bug);
                }
                state.service(side).consumer.position += 1;
            }
            Action::DeadLetter(why) => {
                let event = state.input(Side::Inventory)[usize::from(state.inventory.consumer.position)];
                state.dead_lettered += 1;
                // `refuse_once`: recorded and answered in one transaction; from a newer build:
                // neither (`Handler::understands`).
                if why == DeadLetter::Refused
                    && Outcome::of_recording(state.inventory.inbox.insert(event.id)) == Outcome::Processed
                {
                    state.refused(event);
                }
                state.inventory.dead_letters.push(event);
                state.inventory.consumer.position += 1;
            }
            Action::Redrive => {
                let event = state.inventory.dead_letters.remove(0);
                state.order.topic.push(event);
            }
            Action::Replay => {
                state.replayed += 1;
                state.inventory.consumer.position = 0;
            }
            Action::Record2(side) => {
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
                    service.relays[0].cursor = service.recorded.clone();
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
            Property::always(
                "stock never goes below zero: no unit is reserved that was not there",
                |_: &Protocol, s: &State| !s.oversold,
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
        if self.late_commits {
            properties.push(Property::sometimes(
                "a placement committed after a later one was published",
                |_: &Protocol, s: &State| {
                    s.order.outbox.iter().enumerate().any(|(i, row)| {
                        row.committed
                            && s.order.topic.iter().any(|e| e.id == row.event.id)
                            && s.order.outbox[..i]
                                .iter()
                                .any(|earlier| !s.order.topic.iter().any(|e| e.id == earlier.event.id))
                    })
                },
            ));
        }
        if self.dead_letters > 0 {
            properties.push(Property::sometimes(
                "a placement from a newer build was redriven after its order was cancelled",
                |_: &Protocol, s: &State| {
                    s.inventory.dead_letters.is_empty()
                        && s.decisions.values().any(|d| *d == Reservation::Cancelled)
                        && s.order.topic.iter().filter(|e| e.kind == Kind::Placed).count() > s.orders.len()
                },
            ));
        }
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
        let waiting = |service: &Service| {
            service.outbox.iter().filter(|row| !service.topic.iter().any(|e| e.id == row.event.id)).count()
        };
        let _ = writeln!(
            out,
            "    orders: [{}]; unpublished rows {}/{}; stock {}, held {:?}, shipped {:?}; orders.events {:?}; inventory.events {:?}",
            orders.join(", "),
            waiting(&after.order),
            waiting(&after.inventory),
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
        Action::Write(n) => {
            format!(
                "order service writes customer {}'s order and its event, not committed yet",
                state.requests[n as usize].customer
            )
        }
        Action::Commit(n, reply) => {
            format!("order service commits customer {}'s order; reply {reply:?}", state.requests[n as usize].customer)
        }
        Action::LookUpKey(n) => {
            format!("order service looks up customer {}'s key", state.requests[n as usize].customer)
        }
        Action::Insert(n, reply) => {
            format!("order service inserts customer {}'s order; reply {reply:?}", state.requests[n as usize].customer)
        }
        Action::Cancel(c) => format!("customer {c} cancels its order"),
        Action::Ship(order) => format!("the operator ships order {order}"),
        Action::Publish(side, r) => {
            let service = state.view(side);
            let relay_state = &service.relays[usize::from(r)];
            let event = relay_state
                .in_hand
                .first()
                .copied()
                .or_else(|| service.next_row(&relay_state.cursor, false).map(|(event, _)| event));
            let what =
                event.map_or_else(String::new, |e| format!(" (event {}, {:?} of order {})", e.id, e.kind, e.order));
            format!("{} {r} publishes the next row{what}; the broker acknowledges", relay(side))
        }
        Action::Record(side, r) => format!("{} {r} records its position", relay(side)),
        Action::Take(side, r) => {
            format!("{} {r} takes a row and records its position past it before publishing", relay(side))
        }
        Action::PublishStale(side, r) => {
            format!("{} {r}, its session gone, publishes a row it had read before", relay(side))
        }
        Action::Acquire(side, r) => {
            format!("{} {r} takes the lease; it starts from the recorded position", relay(side))
        }
        Action::LoseSession(side, r) => {
            format!("{} {r} loses its database session, and with it the lease", relay(side))
        }
        Action::Apply(side) => {
            let event = state.input(side)[usize::from(state.view(side).consumer.position)];
            format!("{} applies event {} ({:?} of order {})", consumer(side), event.id, event.kind, event.order)
        }
        Action::DeadLetter(why) => {
            let event = state.input(Side::Inventory)[usize::from(state.inventory.consumer.position)];
            format!("inventory dead-letters event {} ({:?} of order {}): {why:?}", event.id, event.kind, event.order)
        }
        Action::Redrive => {
            let event = state.inventory.dead_letters[0];
            format!(
                "an operator redrives event {} ({:?} of order {}) to orders.events",
                event.id, event.kind, event.order
            )
        }
        Action::Replay => "an operator replays orders.events from its start through inventory's inbox".to_owned(),
        Action::Record2(side) => format!("{} records the event in its inbox, separately", consumer(side)),
        Action::CommitAhead(side) => {
            format!("{} commits the offset past the next event, before its transaction", consumer(side))
        }
        Action::CrashRelay(side, r) => format!("{} {r} crashes and restarts", relay(side)),
        Action::CrashConsumer(side, to) => {
            format!("{} crashes; it reads again from offset {to}, committed by its group", consumer(side))
        }
    }
}
