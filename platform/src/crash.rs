//! Named crash points: places where a test or an operator can make a process die (as if
//! SIGKILLed: no cleanup, no flush, no reply) or fail with an error, to prove that every
//! crash leaves the system consistent.
//!
//! Arm them at start with `CRASH_POINTS="inventory.before_commit=abort;relay.after_publish_before_position=1*error"`
//! or at run time through `PUT /admin/crash-points/{name}`. Actions: `abort`, `error`, `off`;
//! `N*` limits an action to its next N hits.
//!
//! Each crate owns the names of its points (`order::CRASH_POINTS`, `messaging::CRASH_POINTS`,
//! …); a process [`register`]s the names of the crates it runs before arming any.
//!
//! Cost: without the `crash-points` cargo feature, [`point`] is empty. With it, an unarmed
//! process pays one relaxed atomic load per point.

use std::collections::BTreeSet;
#[cfg(feature = "crash-points")]
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

/// The points this process has, as registered by the crates it runs. Arming any other name
/// is refused.
static KNOWN: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());

/// Makes `points` armable in this process.
pub fn register(points: &[&'static str]) {
    KNOWN.lock().unwrap_or_else(PoisonError::into_inner).extend(points);
}

/// Every point this process registered, by name.
pub fn known() -> Vec<&'static str> {
    KNOWN.lock().unwrap_or_else(PoisonError::into_inner).iter().copied().collect()
}

#[cfg(feature = "crash-points")]
static ARMED: AtomicBool = AtomicBool::new(false);

/// What an armed point did instead of crashing.
#[derive(Debug, Clone, thiserror::Error)]
#[error("injected fault at crash point {0}")]
pub struct InjectedFault(pub &'static str);

/// Passes unless the point is armed: then it aborts the process or returns an error.
#[inline]
pub fn point(name: &'static str) -> Result<(), InjectedFault> {
    #[cfg(feature = "crash-points")]
    if ARMED.load(Ordering::Relaxed)
        && let Some(action) = fail::eval(name, |arg| arg)
    {
        if action.as_deref() == Some("abort") {
            tracing::error!(crash_point = name, "crash point reached: aborting the process");
            std::process::abort();
        }
        tracing::warn!(crash_point = name, "crash point reached: failing with an error");
        return Err(InjectedFault(name));
    }
    let _ = name;
    Ok(())
}

/// Why a crash point could not be armed.
#[derive(Debug, thiserror::Error)]
pub enum ArmError {
    #[error("unknown crash point {0:?}; known: {known}", known = known().join(", "))]
    Unknown(String),
    #[error("unknown action {0:?}; use abort, error or off, optionally as N*abort or N*error")]
    Action(String),
    #[error("this build has no crash points (built without the crash-points feature)")]
    NotCompiled,
}

/// Arms (or with `off`, disarms) one point.
pub fn arm(name: &str, action: &str) -> Result<(), ArmError> {
    if !known().contains(&name) {
        return Err(ArmError::Unknown(name.to_owned()));
    }
    let spec = spec_of(action)?;
    #[cfg(feature = "crash-points")]
    {
        fail::cfg(name, &spec).map_err(|_| ArmError::Action(action.to_owned()))?;
        ARMED.store(true, Ordering::Relaxed);
        tracing::warn!(crash_point = name, action, "crash point armed");
        Ok(())
    }
    #[cfg(not(feature = "crash-points"))]
    {
        let _ = spec;
        Err(ArmError::NotCompiled)
    }
}

/// `abort` → `return(abort)`, `3*error` → `3*return(error)`, `off` → `off`.
fn spec_of(action: &str) -> Result<String, ArmError> {
    let (count, verb) = match action.split_once('*') {
        Some((n, verb)) if n.parse::<u32>().is_ok_and(|n| n > 0) => (format!("{n}*"), verb),
        Some(_) => return Err(ArmError::Action(action.to_owned())),
        None => (String::new(), action),
    };
    match verb {
        "abort" | "error" => Ok(format!("{count}return({verb})")),
        "off" if count.is_empty() => Ok("off".to_owned()),
        _ => Err(ArmError::Action(action.to_owned())),
    }
}

/// Arms the points listed in `$CRASH_POINTS` (`name=action;name=action`).
pub fn arm_from_env() -> Result<(), ArmError> {
    let Ok(list) = std::env::var("CRASH_POINTS") else { return Ok(()) };
    for entry in list.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, action) = entry.split_once('=').ok_or_else(|| ArmError::Action(entry.to_owned()))?;
        arm(name.trim(), action.trim())?;
    }
    Ok(())
}

/// The armed points and their actions.
pub fn armed() -> Vec<(String, String)> {
    #[cfg(feature = "crash-points")]
    {
        fail::list().into_iter().filter(|(_, spec)| spec != "off" && !spec.is_empty()).collect()
    }
    #[cfg(not(feature = "crash-points"))]
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_translate_to_fail_specs() {
        assert_eq!(spec_of("abort").ok().as_deref(), Some("return(abort)"));
        assert_eq!(spec_of("3*error").ok().as_deref(), Some("3*return(error)"));
        assert_eq!(spec_of("off").ok().as_deref(), Some("off"));
        for bad in ["explode", "0*abort", "x*abort", "2*off", ""] {
            assert!(spec_of(bad).is_err(), "{bad:?} is refused");
        }
    }

    #[test]
    fn only_known_points_can_be_armed() {
        assert!(matches!(arm("no.such.point", "abort"), Err(ArmError::Unknown(_))));
    }

    #[cfg(not(feature = "crash-points"))]
    #[test]
    fn without_the_feature_no_point_can_be_armed() {
        register(&["order.after_commit_before_reply"]);
        assert!(matches!(arm("order.after_commit_before_reply", "abort"), Err(ArmError::NotCompiled)));
        assert!(point("order.after_commit_before_reply").is_ok());
    }

    #[cfg(feature = "crash-points")]
    #[test]
    fn an_armed_point_fails_its_next_hits_then_passes_again() {
        register(&["order.consumer.after_commit_before_ack"]);
        arm("order.consumer.after_commit_before_ack", "2*error").expect("armed");
        assert!(point("order.consumer.after_commit_before_ack").is_err());
        assert!(point("order.consumer.after_commit_before_ack").is_err());
        assert!(point("order.consumer.after_commit_before_ack").is_ok());
        arm("order.consumer.after_commit_before_ack", "off").expect("disarmed");
        assert!(point("order.consumer.after_commit_before_ack").is_ok());
    }
}
