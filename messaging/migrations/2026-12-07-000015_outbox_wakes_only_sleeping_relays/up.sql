-- A writer of the outbox wakes the relay of its row's lane only while that relay sleeps
-- (decision 0020, "a cost of the wake-up"). Every transaction that sends a NOTIFY takes one
-- cluster-wide lock at commit and holds it through its WAL flush, so notifying writers cannot
-- share a flush; a relay that is awake reads again anyway and needs no notification.
--
-- The protocol, per lane, on advisory lock (2002873189, lane) ("wake"):
-- - A relay about to sleep takes its lanes' locks exclusively (`outbox_relay_sleep`), reads
--   once more, and sleeps on LISTEN only if that read was empty; it lets them go when it
--   wakes (`outbox_relay_wake`).
-- - A writer tries its row's lane shared, until the end of its transaction. It notifies only
--   when that fails: the lane's relay sleeps, or is about to.
-- - A writer that got the shared lock holds it until its commit is visible, so the relay
--   cannot take the lane exclusively in between: its read after taking the locks sees every
--   row whose writer stayed silent. No wake-up is lost.

CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT pg_try_advisory_xact_lock_shared(2002873189, NEW.lane) THEN
        PERFORM pg_notify('outbox', '');
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER outbox_notify ON outbox_log;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox_log
    FOR EACH ROW EXECUTE FUNCTION outbox_notify();

-- Takes every lane's lock or none: true when the relay holds them all (session locks, held
-- until `outbox_relay_wake` or the end of the session).
CREATE FUNCTION outbox_relay_sleep(lanes smallint[]) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    taken smallint[] := '{}';
    lane smallint;
BEGIN
    FOREACH lane IN ARRAY lanes LOOP
        IF NOT pg_try_advisory_lock(2002873189, lane) THEN
            PERFORM pg_advisory_unlock(2002873189, t) FROM unnest(taken) AS t;
            RETURN false;
        END IF;
        taken := taken || lane;
    END LOOP;
    RETURN true;
END $$;

CREATE FUNCTION outbox_relay_wake(lanes smallint[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_unlock(2002873189, lane) FROM unnest(lanes) AS lane;
END $$;
