//! The protocol holds in every interleaving within the bounds, and each planted mistake is
//! found, with a counterexample a person can read (docs/protocol.md).

use std::time::Instant;

use model::{Bug, Protocol, explain};
use stateright::{Checker, Expectation, HasDiscoveries, Model as _};

const SAFETY: [&str; 7] = [
    "a retried request never creates a second order",
    "stock is never deducted twice for an order, and every unit is accounted for",
    "stock never goes below zero: no unit is reserved that was not there",
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

/// Placements whose transactions commit in another order than they drew their outbox ids:
/// the relay's windows publish each once it has committed, and skip none.
#[test]
fn placements_committed_out_of_order_are_each_published_once_committed() {
    holds(Protocol { late_commits: true, crashes: 1, ..Protocol::default() });
}

/// Inventory dead-letters an event (refused, or from a newer build), an operator redrives it
/// and replays the topic: every order still ends, and nothing is applied twice.
#[test]
fn dead_letters_redriven_and_a_topic_replayed_end_every_order_once() {
    holds(Protocol {
        attempts: 1,
        retrying: 0,
        shipping: 0,
        crashes: 0,
        dead_letters: 1,
        replays: 1,
        ..Protocol::default()
    });
}

/// Explores every interleaving of `protocol`: no safety property is violated, and every
/// `sometimes` property is reached.
fn holds(protocol: Protocol) {
    let checker = explore(protocol, false);
    for property in checker.model().properties() {
        if property.name == "an order shipped" && checker.model().shipping == 0 {
            continue;
        }
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
fn a_relay_recording_its_position_before_the_ack_loses_an_order() {
    finds(Bug::PositionBeforeTheAck, "once nothing more can happen, every accepted order is final");
}

/// The position rule's planted mistake: a position that is the last id published skips a
/// placement whose transaction drew a lower id and committed later.
#[test]
fn a_relay_whose_position_is_an_id_skips_a_late_commit_and_loses_an_order() {
    finds_in(
        Protocol {
            bug: Some(Bug::PositionById),
            late_commits: true,
            attempts: 1,
            retrying: 0,
            cancelling: 0,
            shipping: 0,
            ..Protocol::default()
        },
        "once nothing more can happen, every accepted order is final",
    );
}

/// A placement dead-lettered (from a newer build), its order cancelled meanwhile, and the
/// placement redriven after the upgrade: inventory must not reserve for a cancelled order.
#[test]
fn a_placement_redriven_after_its_cancellation_that_reserves_holds_stock_for_a_cancelled_order() {
    finds_in(
        Protocol {
            bug: Some(Bug::PlacementAfterCancellationReserves),
            attempts: 1,
            retrying: 0,
            shipping: 0,
            dead_letters: 1,
            ..Protocol::default()
        },
        "a confirmed order holds its stock; a rejected or cancelled one holds none",
    );
}

/// A placement reserved whether or not the units are there: reported as the named property,
/// with its steps, in any build (the count never wraps or panics).
#[test]
fn a_placement_reserved_without_stock_is_reported_as_stock_below_zero() {
    finds(Bug::ReserveWithoutStock, "stock never goes below zero: no unit is reserved that was not there");
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
fn an_idempotency_key_checked_apart_from_the_insert_makes_a_second_order() {
    finds(Bug::IdempotencyKeyCheckedApart, "a retried request never creates a second order");
}
