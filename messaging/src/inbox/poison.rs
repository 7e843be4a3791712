//! How patiently an event failing for a reason of unknown kind is tried before it is
//! dead-lettered.

use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBuilder};

use crate::settings::InboxSettings;

/// `attempts` tries in all, pausing `first_delay` after the first and doubling (up to 16×),
/// then the dead-letter topic.
#[derive(Debug, Clone, Copy)]
pub struct PoisonPolicy {
    pub attempts: usize,
    pub first_delay: Duration,
}

impl Default for PoisonPolicy {
    fn default() -> Self {
        Self::from(&InboxSettings::default())
    }
}

impl From<&InboxSettings> for PoisonPolicy {
    fn from(settings: &InboxSettings) -> Self {
        Self {
            attempts: settings.dead_letter_attempts.max(1),
            first_delay: Duration::from_millis(settings.retry_first_delay_ms),
        }
    }
}

impl PoisonPolicy {
    /// The pauses between attempts: one fewer than the attempts.
    pub(super) fn backoff(&self) -> impl Iterator<Item = Duration> {
        ExponentialBuilder::default()
            .with_min_delay(self.first_delay)
            .with_max_delay(self.first_delay * 16)
            .with_max_times(self.attempts - 1)
            .build()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::PoisonPolicy;

    #[test]
    fn attempts_are_separated_by_doubling_pauses() {
        let policy = PoisonPolicy { attempts: 4, first_delay: Duration::from_millis(100) };
        let pauses: Vec<u64> = policy.backoff().map(|p| p.as_millis() as u64).collect();
        assert_eq!(pauses.len(), 3, "one pause between each two of the four attempts");
        assert!(pauses.windows(2).all(|w| w[1] >= w[0]), "{pauses:?}");
        assert!(pauses[0] >= 100);
    }

    #[test]
    fn a_single_attempt_has_no_pause() {
        let policy = PoisonPolicy { attempts: 1, first_delay: Duration::from_millis(100) };
        assert_eq!(policy.backoff().count(), 0);
    }
}
