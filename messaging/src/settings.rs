//! How a service's inbox behaves: how long it remembers events, how patiently it retries an
//! event that fails, and how many events it handles at once.

use serde::Deserialize;

/// `<SERVICE>__INBOX__*` settings.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct InboxSettings {
    /// How long an applied event's id is remembered at least. Must exceed the topics'
    /// retention (kafka-init sets 168 h): an older event cannot be redelivered. 14 days by
    /// default; the inbox log's ring holds 16 days, so a longer retention keeps a day's
    /// partition for another turn of the ring (`inbox::retention`).
    pub keep_hours: u64,
    /// How often the days older than that are given back.
    pub purge_every_secs: u64,
    /// How many times an event failing for a reason of unknown kind is tried before it goes
    /// to the dead-letter topic (`<topic>.dlq`). A refused event goes there at once; one
    /// failing because the database is busy or unreachable never does (decision 0011).
    pub dead_letter_attempts: usize,
    /// The first pause between those attempts; it doubles after each (up to 16×).
    pub retry_first_delay_ms: u64,
    /// How long a partition's oldest event may keep failing before the partition counts as
    /// stuck: `/health` then says not ready, naming it and the reason.
    pub stall_after_secs: u64,
    /// How many events one consumer handles at once, across its partitions (the events of
    /// one order are always handled one after the other).
    pub max_in_flight: usize,
    /// How many events one transaction may apply: an event's first attempt joins the events
    /// waiting alongside it, and all of them commit together (decision 0025). 1: each event
    /// in a transaction of its own.
    pub batch_max: usize,
    /// How long a batch waits for a row lock (`lock_timeout`) before it gives up and its
    /// events are tried alone: one event waiting for a row someone holds must not hold up
    /// the events batched with it, nor the batches behind.
    pub batch_lock_wait_ms: u64,
    /// How long a partition the group takes away waits for this instance to finish the events
    /// it already holds of it, before it goes to its new owner with their offsets committed
    /// (`inbox::in_hand`). 0: let it go at once; its new owner then rereads those events and
    /// meets their row locks.
    pub revoke_wait_ms: u64,
}

impl Default for InboxSettings {
    fn default() -> Self {
        Self {
            keep_hours: 14 * 24,
            purge_every_secs: 3_600,
            dead_letter_attempts: 6,
            retry_first_delay_ms: 250,
            stall_after_secs: 30,
            max_in_flight: 64,
            batch_max: 32,
            batch_lock_wait_ms: 200,
            revoke_wait_ms: 1_000,
        }
    }
}
