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
--
-- It answers NULL when no id has been handed out yet: then 0 is below every id. Newer
-- Postgres versions also answer NULL to a caller without the right to read the sequence.
-- 0 would then hold every floor at the log's start and keep every partition from being given
-- back, without a word, so that case is an error.
CREATE FUNCTION outbox_last_id() RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    last bigint := pg_sequence_last_value('outbox_id_seq');
BEGIN
    IF last IS NOT NULL THEN
        RETURN last;
    END IF;
    IF NOT has_sequence_privilege('outbox_id_seq', 'SELECT,USAGE') THEN
        RAISE EXCEPTION 'outbox_last_id(): % may not read the sequence outbox_id_seq', current_user
            USING HINT = 'GRANT SELECT ON SEQUENCE outbox_id_seq to the relay''s role';
    END IF;
    RETURN 0;
END $$;
