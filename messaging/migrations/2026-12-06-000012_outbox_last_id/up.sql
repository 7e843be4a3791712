-- The last outbox id handed out, read so that it is never ahead of the truth (decision 0026,
-- "The event lost once").
--
-- `SELECT last_value FROM outbox_id_seq` can be ahead by up to 32. nextval() changes the
-- sequence's tuple in place. When it writes WAL (every 32nd call, and the first after a
-- checkpoint) it first puts the value 32 ahead into the buffer, the value its WAL record
-- logs, and only after the record is written the real one; it holds the buffer's exclusive
-- lock meanwhile. A plain SELECT checks the tuple under a share lock but reads its columns
-- after letting the lock go, so it can read the value 32 ahead. The relay takes this value as
-- a bound on the ids drawn so far (relay/src/window.rs, "floors"). One that was 32 too high
-- made a floor skip the rows in between: 26 events were never published.
-- pg_sequence_last_value() reads the tuple while it holds the buffer lock.
CREATE FUNCTION outbox_last_id() RETURNS bigint LANGUAGE sql VOLATILE AS $$
    SELECT COALESCE(pg_sequence_last_value('outbox_id_seq'), 0)
$$;
