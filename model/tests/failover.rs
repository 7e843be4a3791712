//! A database failover keeps the outbox system's promises when the relay, the order service
//! and the consumers wait for the synchronous standby, and each shortcut is found with a
//! counterexample (model/src/failover.rs, issue 34).

use model::failover::{Failover, FailoverBug};
use stateright::{Checker, Expectation, HasDiscoveries, Model as _};

fn explore(model: Failover, finish_when: HasDiscoveries) -> impl Checker<Failover> {
    let bounds = format!("{model:?}");
    let checker = model.check(finish_when);
    println!(
        "{bounds}: {} states ({} unique), depth {}",
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth()
    );
    checker
}

#[test]
fn waiting_for_the_standby_keeps_every_promise_across_failovers() {
    let checker = explore(Failover::default(), HasDiscoveries::All);
    for property in checker.model().properties() {
        let found = checker.discovery(property.name);
        match property.expectation {
            Expectation::Always => {
                if let Some(path) = found {
                    panic!("{} is violated: {:?}", property.name, path.into_actions());
                }
            }
            Expectation::Sometimes => assert!(found.is_some(), "never reached: {}", property.name),
            Expectation::Eventually => unreachable!("the model states liveness as an always property"),
        }
    }
}

/// Explores with `bug` planted and expects a counterexample of `property`.
fn finds(bug: FailoverBug, property: &'static str) {
    let checker = explore(Failover { bug: Some(bug), ..Failover::default() }, HasDiscoveries::AnyFailures);
    assert!(checker.model().properties().iter().any(|p| p.name == property), "no property {property:?}");
    let path = checker.discovery(property).unwrap_or_else(|| panic!("{bug:?} went unnoticed by {property:?}"));
    println!("{bug:?} breaks {property:?}: {:?}", path.into_actions());
}

#[test]
fn publishing_a_row_before_the_standby_has_it_leaves_a_ghost_event() {
    finds(FailoverBug::PublishBeforeTheStandby, "no ghost: every event on the topic is of an order the primary has");
}

#[test]
fn acknowledging_before_the_standby_has_the_commit_loses_an_order() {
    finds(FailoverBug::AcknowledgeBeforeTheStandby, "no acknowledged order is lost");
}

#[test]
fn an_offset_committed_before_the_standby_has_the_inbox_loses_an_event() {
    finds(
        FailoverBug::OffsetBeforeTheStandby,
        "no inbound event is lost: every one below the committed offset is applied",
    );
}
