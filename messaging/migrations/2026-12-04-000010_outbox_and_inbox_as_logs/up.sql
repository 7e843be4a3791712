-- The outbox and the inbox as logs (decision 0026). Rows are appended and never deleted one
-- by one. Each table is a ring of partitions, and space comes back a partition at a time, with
-- a TRUNCATE that never waits for a lock (relay/src/reclaim.rs, messaging/src/inbox/retention.rs).
--
-- Versions from before this migration may still run for a while during a rolling upgrade.
-- Their names, `outbox` and `inbox`, become views over the new tables. Writes through them
-- land in the logs, with the same deduplication for the inbox. An old relay reads nothing
-- from the `outbox` view and so publishes nothing. See "Upgrading to the log" in
-- docs/runbook.md.

------------------------------------------------------------------------------------------
-- The outbox log
------------------------------------------------------------------------------------------

LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE;
ALTER TABLE outbox RENAME TO outbox_before_log;

-- A transaction takes an id of its own before it draws any outbox id. The relay bounds its
-- reads with that order: a transaction that got its id after a moment drew all of its rows'
-- ids after that moment too (relay/src/window.rs).
CREATE FUNCTION outbox_next_id() RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_current_xact_id();
    RETURN nextval('outbox_id_seq');
END $$;

-- The transaction id Postgres will hand out next, read without taking one. A snapshot's xmax
-- is one past the newest *completed* id; age() of an id, asked by a transaction that has no
-- id of its own, counts from the next id to be handed out.
CREATE FUNCTION outbox_next_xid() RETURNS xid8 LANGUAGE sql VOLATILE AS $$
    SELECT (x::text::numeric + age((x::text::numeric % 4294967296)::text::xid))::text::xid8
      FROM pg_snapshot_xmax(pg_current_snapshot()) AS x
$$;

-- The ring: ids fall into 8 partitions, 16,384 ids (one generation) at a time; after 8
-- generations the first partition comes round again. A partition is truncated once every
-- lane has published everything in it (relay/src/reclaim.rs).
CREATE TABLE outbox_log (
    id             bigint      NOT NULL DEFAULT outbox_next_id(),
    -- The writing transaction: the relay publishes a transaction's rows once a snapshot
    -- shows it committed (relay/src/window.rs).
    tx             xid8        NOT NULL DEFAULT pg_current_xact_id(),
    event_id       uuid        NOT NULL,
    topic          text        NOT NULL,
    message_key    text        NOT NULL,
    event_type     text        NOT NULL,
    correlation_id text        NOT NULL,
    traceparent    text,
    envelope       jsonb       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    -- The relay lane: every row of one order (the message key) is in the same lane.
    lane           smallint    NOT NULL GENERATED ALWAYS AS ((hashtext(message_key) & 7)::smallint) STORED
) PARTITION BY LIST (((id >> 14) & 7));
CREATE TABLE outbox_log_0 PARTITION OF outbox_log FOR VALUES IN (0);
CREATE TABLE outbox_log_1 PARTITION OF outbox_log FOR VALUES IN (1);
CREATE TABLE outbox_log_2 PARTITION OF outbox_log FOR VALUES IN (2);
CREATE TABLE outbox_log_3 PARTITION OF outbox_log FOR VALUES IN (3);
CREATE TABLE outbox_log_4 PARTITION OF outbox_log FOR VALUES IN (4);
CREATE TABLE outbox_log_5 PARTITION OF outbox_log FOR VALUES IN (5);
CREATE TABLE outbox_log_6 PARTITION OF outbox_log FOR VALUES IN (6);
CREATE TABLE outbox_log_7 PARTITION OF outbox_log FOR VALUES IN (7);
-- The relay reads a lane after a position, in id order.
CREATE INDEX outbox_log_lane_id_idx ON outbox_log (lane, id);
ALTER SEQUENCE outbox_id_seq OWNED BY outbox_log.id;

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox_log
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- Each lane's publisher and position. A relay owns a lane while its lease runs, and renews the
-- lease while it lives. Every takeover raises the epoch, and a position is written only with
-- the epoch of its owner, so a relay that lost its lane (paused past its lease, say) cannot
-- move the lane (relay/src/lanes.rs).
--
-- The position (relay/src/position.rs) says what is published: every row of a transaction
-- `done` sees, and of the transactions `window_end` sees, the rows up to `window_last`.
-- Every row of a transaction `done` does not see has an id above `floor_id`.
CREATE TABLE outbox_lanes (
    lane        smallint    PRIMARY KEY,
    owner       bigint,
    epoch       bigint      NOT NULL DEFAULT 0,
    lease_until timestamptz NOT NULL DEFAULT '-infinity',
    done        pg_snapshot NOT NULL DEFAULT '3:3:',
    floor_id    bigint      NOT NULL DEFAULT 0,
    window_end  pg_snapshot,
    window_last bigint,
    moved_at    timestamptz NOT NULL DEFAULT now()
);
INSERT INTO outbox_lanes (lane) SELECT generate_series(0, 7);

-- What no relay has published yet, by the positions written so far.
CREATE VIEW outbox_pending AS
SELECT o.*
  FROM outbox_log o JOIN outbox_lanes l ON l.lane = o.lane
 WHERE o.id > l.floor_id
   AND NOT pg_visible_in_snapshot(o.tx, l.done)
   AND NOT (l.window_end IS NOT NULL AND o.id <= l.window_last AND pg_visible_in_snapshot(o.tx, l.window_end));

-- The rows that were waiting, in their order: published again from the start of the log.
-- Rows an old relay had already published are published twice; consumers skip the copies.
INSERT INTO outbox_log (event_id, topic, message_key, event_type, correlation_id, traceparent, envelope, created_at)
SELECT event_id, topic, message_key, event_type, correlation_id, traceparent, envelope, created_at
  FROM outbox_before_log ORDER BY id;
DROP TABLE outbox_before_log;

-- For a version from before the log: writes land in the log; reads find nothing, so an old
-- relay publishes nothing and deletes nothing.
CREATE VIEW outbox AS
SELECT id, event_id, topic, message_key, event_type, correlation_id, traceparent, envelope, created_at,
       (hashtext(message_key) & 1023) AS lane_bucket
  FROM outbox_log WHERE false;

------------------------------------------------------------------------------------------
-- The inbox log
------------------------------------------------------------------------------------------

LOCK TABLE inbox IN ACCESS EXCLUSIVE MODE;
ALTER TABLE inbox RENAME TO inbox_before_log;

-- Where an event's id is remembered: the day its id was made (a UUID v7 starts with its
-- time in milliseconds), in a ring of 16 days. The slot is a function of the id alone, so
-- one id has one place and (event_id, slot) is unique exactly when event_id is.
CREATE FUNCTION inbox_slot(event_id uuid) RETURNS smallint LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT (((('x' || substr(event_id::text, 1, 8) || substr(event_id::text, 10, 4))::bit(48)::bigint)
              / 86400000) % 16)::smallint
$$;

CREATE TABLE inbox_log (
    event_id        uuid        NOT NULL,
    slot            smallint    NOT NULL,
    event_type      text        NOT NULL,
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, slot)
) PARTITION BY LIST (slot);
CREATE TABLE inbox_log_0 PARTITION OF inbox_log FOR VALUES IN (0);
CREATE TABLE inbox_log_1 PARTITION OF inbox_log FOR VALUES IN (1);
CREATE TABLE inbox_log_2 PARTITION OF inbox_log FOR VALUES IN (2);
CREATE TABLE inbox_log_3 PARTITION OF inbox_log FOR VALUES IN (3);
CREATE TABLE inbox_log_4 PARTITION OF inbox_log FOR VALUES IN (4);
CREATE TABLE inbox_log_5 PARTITION OF inbox_log FOR VALUES IN (5);
CREATE TABLE inbox_log_6 PARTITION OF inbox_log FOR VALUES IN (6);
CREATE TABLE inbox_log_7 PARTITION OF inbox_log FOR VALUES IN (7);
CREATE TABLE inbox_log_8 PARTITION OF inbox_log FOR VALUES IN (8);
CREATE TABLE inbox_log_9 PARTITION OF inbox_log FOR VALUES IN (9);
CREATE TABLE inbox_log_10 PARTITION OF inbox_log FOR VALUES IN (10);
CREATE TABLE inbox_log_11 PARTITION OF inbox_log FOR VALUES IN (11);
CREATE TABLE inbox_log_12 PARTITION OF inbox_log FOR VALUES IN (12);
CREATE TABLE inbox_log_13 PARTITION OF inbox_log FOR VALUES IN (13);
CREATE TABLE inbox_log_14 PARTITION OF inbox_log FOR VALUES IN (14);
CREATE TABLE inbox_log_15 PARTITION OF inbox_log FOR VALUES IN (15);
-- A slot is truncated only when its newest row was received longer ago than the retention.
CREATE INDEX inbox_log_received_at_idx ON inbox_log (received_at);

INSERT INTO inbox_log (event_id, slot, event_type, topic, kafka_partition, kafka_offset, received_at)
SELECT event_id, inbox_slot(event_id), event_type, topic, kafka_partition, kafka_offset, received_at
  FROM inbox_before_log;
DROP TABLE inbox_before_log;

-- For a version from before the log: it records an event through this view and learns, as
-- before, whether the event was new (one row inserted) or already there (none).
CREATE VIEW inbox AS
SELECT event_id, event_type, topic, kafka_partition, kafka_offset, received_at FROM inbox_log WHERE false;

CREATE FUNCTION inbox_insert_into_log() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO inbox_log (event_id, slot, event_type, topic, kafka_partition, kafka_offset, received_at)
    VALUES (NEW.event_id, inbox_slot(NEW.event_id), NEW.event_type, NEW.topic, NEW.kafka_partition,
            NEW.kafka_offset, COALESCE(NEW.received_at, now()))
    ON CONFLICT DO NOTHING;
    IF FOUND THEN
        RETURN NEW;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER inbox_insert_into_log INSTEAD OF INSERT ON inbox
    FOR EACH ROW EXECUTE FUNCTION inbox_insert_into_log();
