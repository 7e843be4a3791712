//! A service database with a synchronous standby, and the failover that promotes it
//! (issue 34): the rules that keep an outbox system's promises when the primary is lost.
//!
//! The primary commits transactions in one order, its WAL; the standby holds a prefix of it,
//! growing as it flushes. A committed transaction is visible on the primary at once, whether
//! or not the standby has it: that is what a commit whose wait for the standby is cancelled
//! (or a primary that has dropped to asynchronous replication) leaves behind. A failover
//! promotes the standby with the prefix it holds; everything after it is gone.
//!
//! Three rules, each with the mistake it prevents planted as a [`FailoverBug`]:
//! - a client is told its order was accepted only once the standby holds its commit, or an
//!   acknowledged order is lost;
//! - the relay publishes an outbox row only once the standby holds its commit, or Kafka
//!   carries a *ghost*: an event whose order the promoted database never had;
//! - a consumer commits its Kafka offset past an event only once the standby holds the inbox
//!   transaction that applied it, or the event is never applied on the promoted database.
//!
//! Apart from the main model ([`crate::Protocol`]), because it is a different state machine:
//! that one interleaves the services' decisions over one durable database each; this one
//! interleaves one database's durability with its readers, and stays small enough to explore
//! several failovers.

use std::collections::BTreeSet;

use stateright::{HasDiscoveries, Model, Property};

/// A durability mistake to plant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailoverBug {
    /// The relay publishes every committed outbox row, whether or not the standby has it.
    PublishBeforeTheStandby,
    /// The order service answers as soon as its commit returns (asynchronous replication).
    AcknowledgeBeforeTheStandby,
    /// A consumer commits its offset as soon as its inbox transaction commits on the primary.
    OffsetBeforeTheStandby,
}

/// The bounds of one exploration.
#[derive(Debug, Clone)]
pub struct Failover {
    /// Orders placed, each one transaction writing the order and its outbox row.
    pub orders: u8,
    /// Events on the topic the service consumes, each applied in one inbox transaction.
    pub inbound: u8,
    /// Failovers, in all.
    pub failovers: u8,
    pub bug: Option<FailoverBug>,
}

impl Default for Failover {
    fn default() -> Self {
        Self { orders: 3, inbound: 2, failovers: 2, bug: None }
    }
}

/// A committed transaction, as the WAL carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Commit {
    /// An order and its outbox row.
    Order(u8),
    /// The inbox row and the state change of an inbound event.
    Inbox(u8),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct State {
    /// The primary's committed transactions, in commit order.
    pub primary: Vec<Commit>,
    /// How many of them the standby holds (always a prefix).
    pub flushed: usize,
    /// Orders whose client waits for its answer (committed, not yet acknowledged).
    pub waiting: BTreeSet<u8>,
    /// Orders whose client was told "accepted".
    pub acknowledged: BTreeSet<u8>,
    /// The outbox's topic: the orders whose events were published, in order.
    pub topic: Vec<u8>,
    /// The consumer: the next inbound event it reads, and the offset its group committed.
    pub read: u8,
    pub offset: u8,
    pub placed: u8,
    pub failovers: u8,
    /// A failover took back a commit that the primary had made visible.
    pub lost: bool,
}

impl State {
    fn holds(&self, commit: Commit) -> bool {
        self.primary.contains(&commit)
    }

    /// Whether the standby holds `commit`: it survives any failover from now on.
    fn durable(&self, commit: Commit) -> bool {
        self.primary[..self.flushed].contains(&commit)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// A client places an order: the transaction commits on the primary.
    Place(u8),
    /// The standby flushes the primary's next committed transaction.
    Flush,
    /// The order service answers the client of order N: accepted.
    Acknowledge(u8),
    /// The client's wait is cancelled (it gave up, the statement was cancelled): it is told
    /// nothing, and the commit stays on the primary.
    Cancel(u8),
    /// The relay publishes the outbox row of order N.
    Publish(u8),
    /// The consumer applies inbound event N through the inbox (or skips it, already there).
    Apply(u8),
    /// The consumer's group commits its offset.
    CommitOffset(u8),
    /// The primary is lost; the standby is promoted with what it holds, and a new standby is
    /// built from it. Clients waiting lose their connection; the consumer rereads from its
    /// committed offset; the relay starts again from what the new primary holds.
    Promote,
}

impl Failover {
    fn has(&self, bug: FailoverBug) -> bool {
        self.bug == Some(bug)
    }

    /// The order the relay publishes next: the first committed outbox row (in commit order)
    /// not yet on the topic, if the rule lets it go.
    fn next_to_publish(&self, state: &State) -> Option<u8> {
        let visible = if self.has(FailoverBug::PublishBeforeTheStandby) { state.primary.len() } else { state.flushed };
        state.primary[..visible].iter().find_map(|commit| match commit {
            Commit::Order(order) if !state.topic.contains(order) => Some(*order),
            _ => None,
        })
    }

    /// Where the consumer may commit its offset: past every event read whose inbox
    /// transaction the rule counts as done.
    fn committable_offset(&self, state: &State) -> u8 {
        if self.has(FailoverBug::OffsetBeforeTheStandby) {
            return state.read;
        }
        (0..state.read).find(|&event| !state.durable(Commit::Inbox(event))).unwrap_or(state.read)
    }

    /// No step is possible (failovers aside, which are always possible while any are left).
    pub fn is_quiescent(&self, state: &State) -> bool {
        let mut actions = Vec::new();
        self.actions(state, &mut actions);
        actions.iter().all(|action| *action == Action::Promote)
    }

    /// Explores every interleaving within the bounds: see [`crate::explore`].
    pub fn check(self, finish_when: HasDiscoveries) -> impl stateright::Checker<Self> {
        crate::explore(self, finish_when)
    }
}

impl Model for Failover {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![State {
            primary: Vec::new(),
            flushed: 0,
            waiting: BTreeSet::new(),
            acknowledged: BTreeSet::new(),
            topic: Vec::new(),
            read: 0,
            offset: 0,
            placed: 0,
            failovers: 0,
            lost: false,
        }]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        if state.placed < self.orders {
            actions.push(Action::Place(state.placed));
        }
        if state.flushed < state.primary.len() {
            actions.push(Action::Flush);
        }
        for &order in &state.waiting {
            if self.has(FailoverBug::AcknowledgeBeforeTheStandby) || state.durable(Commit::Order(order)) {
                actions.push(Action::Acknowledge(order));
            }
            actions.push(Action::Cancel(order));
        }
        if let Some(order) = self.next_to_publish(state) {
            actions.push(Action::Publish(order));
        }
        if state.read < self.inbound {
            actions.push(Action::Apply(state.read));
        }
        let offset = self.committable_offset(state);
        if offset > state.offset {
            actions.push(Action::CommitOffset(offset));
        }
        if state.failovers < self.failovers {
            actions.push(Action::Promote);
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut state = last.clone();
        match action {
            Action::Place(order) => {
                state.primary.push(Commit::Order(order));
                state.placed += 1;
                state.waiting.insert(order);
            }
            Action::Flush => state.flushed += 1,
            Action::Acknowledge(order) => {
                state.waiting.remove(&order);
                state.acknowledged.insert(order);
            }
            Action::Cancel(order) => {
                state.waiting.remove(&order);
            }
            Action::Publish(order) => state.topic.push(order),
            Action::Apply(event) => {
                if !state.holds(Commit::Inbox(event)) {
                    state.primary.push(Commit::Inbox(event));
                }
                state.read += 1;
            }
            Action::CommitOffset(offset) => state.offset = offset,
            Action::Promote => {
                state.lost |= state.primary.len() > state.flushed;
                state.primary.truncate(state.flushed);
                state.flushed = state.primary.len();
                state.waiting.clear();
                state.read = state.offset;
                state.failovers += 1;
            }
        }
        Some(state)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("no acknowledged order is lost", |_: &Failover, s: &State| {
                s.acknowledged.iter().all(|&order| s.holds(Commit::Order(order)))
            }),
            Property::always(
                "no ghost: every event on the topic is of an order the primary has",
                |_: &Failover, s: &State| s.topic.iter().all(|&order| s.holds(Commit::Order(order))),
            ),
            Property::always(
                "no inbound event is lost: every one below the committed offset is applied",
                |_: &Failover, s: &State| (0..s.offset).all(|event| s.holds(Commit::Inbox(event))),
            ),
            Property::always(
                "once nothing more can happen, every order the primary has is published and every inbound event applied",
                |m: &Failover, s: &State| {
                    !m.is_quiescent(s)
                        || (s.primary.iter().all(|commit| match commit {
                            Commit::Order(order) => s.topic.contains(order),
                            Commit::Inbox(_) => true,
                        }) && (0..m.inbound).all(|event| s.holds(Commit::Inbox(event))))
                },
            ),
            Property::sometimes(
                "a failover after an order was acknowledged and published, and an event applied",
                |_: &Failover, s: &State| {
                    s.failovers > 0 && !s.acknowledged.is_empty() && !s.topic.is_empty() && s.offset > 0
                },
            ),
            Property::sometimes("a failover takes back a commit the primary had shown", |_: &Failover, s: &State| {
                s.lost
            }),
        ]
    }
}
