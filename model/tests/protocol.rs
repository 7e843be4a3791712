//! The protocol holds in every interleaving within the bounds, and each planted mistake is
//! found, with a counterexample a person can read (docs/protocol.md).

use std::time::Instant;

use model::{Bug, Protocol, explain};
use stateright::{Checker, Expectation, HasDiscoveries, Model as _};

const SAFETY: [&str; 6] = [
    "a retried request never creates a second order",
    "stock is never deducted twice for an order, and every unit is accounted for",
    "every event's effect is applied at most once",
    "a confirmed order holds its stock; a rejected or cancelled one holds none",
    "nothing ships without a reservation, and a shipped order is never cancelled",
    "once nothing more can happen, every accepted order is final",
];

fn explore(protocol: Protocol, hunting: bool) -> impl Checker<Protocol> {
    let bounds = format!("{protocol:?}");
    let started = Instant::now();
    let checker = protocol.check(if hunting { HasDiscoveries::AnyFailures } else { HasDiscoveries::All });
    println!(
        "{bounds}: {} states ({} unique), depth {}, {:.1} s",
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth(),
        started.elapsed().as_secs_f64()
    );
    checker
}

#[test]
fn the_protocol_holds_in_every_interleaving() {
    holds(Protocol::default());
}

/// Two relay instances per outbox: the leader's session may be lost (its lock released while
/// its producer still holds rows it read) and the other takes over. Fewer retries, to stay
/// within a test's time (two crashes: 55 M states, 7 minutes; `explore` runs them).
#[test]
fn relays_sharing_an_outbox_hand_over_through_the_leader_lock() {
    holds(Protocol { relays: 2, attempts: 1, retrying: 0, crashes: 1, ..Protocol::default() });
}

/// Explores every interleaving of `protocol`: no safety property is violated, and every
/// `sometimes` property is reached.
fn holds(protocol: Protocol) {
    let checker = explore(protocol, false);
    for property in checker.model().properties() {
        let found = checker.discovery(property.name);
        match property.expectation {
            Expectation::Always => {
                if let Some(path) = found {
                    panic!("{} is violated:\n{}", property.name, explain(&path));
                }
            }
            Expectation::Sometimes => assert!(found.is_some(), "never reached: {}", property.name),
            Expectation::Eventually => unreachable!("the model states liveness as an always property"),
        }
    }
    assert_eq!(
        SAFETY.len(),
        checker.model().properties().iter().filter(|p| p.expectation == Expectation::Always).count()
    );
}

/// Explores with `bug` planted and expects a counterexample of `property`; prints it.
fn finds(bug: Bug, property: &'static str) {
    finds_in(Protocol { bug: Some(bug), ..Protocol::default() }, property);
}

fn finds_in(protocol: Protocol, property: &'static str) {
    let bug = protocol.bug.expect("a planted bug");
    // One crash is enough for each of them; the search stops at the first counterexample.
    let checker = explore(Protocol { crashes: 1, ..protocol }, true);
    assert!(SAFETY.contains(&property));
    let path = checker.discovery(property).unwrap_or_else(|| panic!("{bug:?} went unnoticed by {property:?}"));
    println!("{bug:?} breaks {property:?}:\n{}", explain(&path));
}

#[test]
fn the_inbox_outside_the_transaction_applies_an_event_twice() {
    finds(Bug::InboxOutsideTheTransaction, "every event's effect is applied at most once");
}

#[test]
fn a_relay_deleting_before_the_ack_loses_an_order() {
    finds(Bug::RelayDeletesBeforeTheAck, "once nothing more can happen, every accepted order is final");
}

#[test]
fn an_offset_committed_before_the_transaction_loses_an_order() {
    finds(Bug::OffsetCommittedBeforeTheTransaction, "once nothing more can happen, every accepted order is final");
}

#[test]
fn a_cancellation_accepted_while_shipping_cancels_a_shipped_order() {
    finds(Bug::CancelWhileShipping, "nothing ships without a reservation, and a shipped order is never cancelled");
}

#[test]
fn a_leader_lock_held_apart_from_the_work_loses_an_order() {
    finds_in(
        Protocol { bug: Some(Bug::LockOnAnotherConnection), relays: 2, ..Protocol::default() },
        "once nothing more can happen, every accepted order is final",
    );
}

#[test]
fn an_idempotency_key_checked_apart_from_the_insert_makes_a_second_order() {
    finds(Bug::IdempotencyKeyCheckedApart, "a retried request never creates a second order");
}
