//! Explores the protocol with the bounds given, and prints what it found and how long it took:
//! `cargo run --release -p model --example explore -- [customers stock attempts retrying cancelling shipping relays crashes late_commits dead_letters replays [bug]]`
//! (late_commits: 0 or 1; bug: inbox, position-before-ack, position-by-id, offset, idempotency,
//! cancel-while-shipping, placement-after-cancellation, reserve-without-stock).

use std::time::Instant;

use model::{Bug, Protocol, explain};
use stateright::{Checker as _, HasDiscoveries, Model as _};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize, default: u8| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let defaults = Protocol::default();
    let bug = match args.get(11).map(String::as_str) {
        Some("inbox") => Some(Bug::InboxOutsideTheTransaction),
        Some("position-before-ack") => Some(Bug::PositionBeforeTheAck),
        Some("position-by-id") => Some(Bug::PositionById),
        Some("offset") => Some(Bug::OffsetCommittedBeforeTheTransaction),
        Some("idempotency") => Some(Bug::IdempotencyKeyCheckedApart),
        Some("cancel-while-shipping") => Some(Bug::CancelWhileShipping),
        Some("placement-after-cancellation") => Some(Bug::PlacementAfterCancellationReserves),
        Some("reserve-without-stock") => Some(Bug::ReserveWithoutStock),
        _ => None,
    };
    let protocol = Protocol {
        customers: number(0, defaults.customers),
        stock: number(1, defaults.stock),
        attempts: number(2, defaults.attempts),
        retrying: number(3, defaults.retrying),
        cancelling: number(4, defaults.cancelling),
        shipping: number(5, defaults.shipping),
        relays: number(6, defaults.relays),
        crashes: number(7, defaults.crashes),
        late_commits: number(8, 0) == 1,
        dead_letters: number(9, defaults.dead_letters),
        replays: number(10, defaults.replays),
        bug,
    };
    println!("{protocol:?}");
    let started = Instant::now();
    let checker = protocol.check(HasDiscoveries::All);
    println!(
        "{} states ({} unique), depth {}, {:.1} s",
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth(),
        started.elapsed().as_secs_f64()
    );
    for property in checker.model().properties() {
        match checker.discovery(property.name) {
            Some(path) => println!("{:?} {}: found\n{}", property.expectation, property.name, explain(&path)),
            None => println!("{:?} {}: none", property.expectation, property.name),
        }
    }
}
