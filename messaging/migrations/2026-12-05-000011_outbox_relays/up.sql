-- The relays of this outbox, and when each last said it is alive (relay/src/lanes.rs).
--
-- A relay's member lock says its session is open; it does not say the relay is running. A
-- relay that is paused (SIGSTOP, a debugger, a VM stalled) keeps its session and its lock.
-- Counted as a member, it would make the live relays give lanes back "to it" that it never
-- takes. So a relay counts toward the others' share only while it holds its lock *and* has
-- written here within its lease.
CREATE TABLE outbox_relays (
    member  bigint      PRIMARY KEY,
    seen_at timestamptz NOT NULL DEFAULT now()
);
