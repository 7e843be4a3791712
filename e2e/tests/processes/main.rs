//! Faults that need real processes: crash points that abort (as SIGKILL would), SIGTERM
//! under load, a broker that goes away, services started before their dependencies, the
//! broker's ACLs for each service's principal. Each
//! test ends with the invariant checker: every order settled once, stock exact.

mod consumer_group;
mod crashes;
mod dependencies;
mod kafka_acls;
mod keys;
mod notifications;
mod relay_lanes;
mod supervision;
mod traces;
mod tracing;
