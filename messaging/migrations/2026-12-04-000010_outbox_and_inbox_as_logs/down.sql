-- Back to the outbox and inbox as queues. The rows no relay has published yet go back into
-- the outbox queue, in id order; the inbox keeps every id it remembers.
DROP TRIGGER inbox_insert_into_log ON inbox;
DROP FUNCTION inbox_insert_into_log();
DROP VIEW inbox;
CREATE TABLE inbox (
    event_id    UUID        PRIMARY KEY,
    event_type  TEXT        NOT NULL,
    topic       TEXT        NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset    BIGINT  NOT NULL,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX inbox_received_at_idx ON inbox (received_at);
INSERT INTO inbox SELECT event_id, event_type, topic, kafka_partition, kafka_offset, received_at FROM inbox_log;
DROP TABLE inbox_log;
DROP FUNCTION inbox_slot(uuid);

DROP VIEW outbox;
CREATE TABLE outbox (
    id             BIGINT      PRIMARY KEY DEFAULT nextval('outbox_id_seq'),
    event_id       UUID        NOT NULL UNIQUE,
    topic          TEXT        NOT NULL,
    message_key    TEXT        NOT NULL,
    event_type     TEXT        NOT NULL,
    correlation_id TEXT        NOT NULL,
    traceparent    TEXT,
    envelope       JSONB       NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    lane_bucket    INTEGER     NOT NULL GENERATED ALWAYS AS (hashtext(message_key) & 1023) STORED
);
INSERT INTO outbox (id, event_id, topic, message_key, event_type, correlation_id, traceparent, envelope, created_at)
SELECT id, event_id, topic, message_key, event_type, correlation_id, traceparent, envelope, created_at
  FROM outbox_pending ORDER BY id
    ON CONFLICT (event_id) DO NOTHING;
ALTER SEQUENCE outbox_id_seq OWNED BY outbox.id;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
DROP VIEW outbox_pending;
DROP TABLE outbox_lanes;
DROP TABLE outbox_log;
DROP FUNCTION outbox_next_xid();
DROP FUNCTION outbox_next_id();
