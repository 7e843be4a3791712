-- Transactional messaging: the outbox holds events written in the same transaction as
-- the state change they describe, until the relay has published them; the inbox remembers
-- every event consumed, so a redelivered event is recognised and skipped.
CREATE TABLE outbox (
    id             BIGSERIAL PRIMARY KEY,
    event_id       UUID        NOT NULL UNIQUE,
    topic          TEXT        NOT NULL,
    message_key    TEXT        NOT NULL,
    event_type     TEXT        NOT NULL,
    correlation_id TEXT        NOT NULL,
    traceparent    TEXT,
    envelope       JSONB       NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Wakes the relay when the inserting transaction commits (NOTIFY is delivered on commit,
-- and identical notifications of one transaction are folded into one).
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END $$;

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

CREATE TABLE inbox (
    event_id    UUID        PRIMARY KEY,
    event_type  TEXT        NOT NULL,
    topic       TEXT        NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset    BIGINT  NOT NULL,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX inbox_received_at_idx ON inbox (received_at);
