DROP FUNCTION outbox_relay_wake(smallint[]);
DROP FUNCTION outbox_relay_sleep(smallint[]);
DROP TRIGGER outbox_notify ON outbox_log;
CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox_log
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
