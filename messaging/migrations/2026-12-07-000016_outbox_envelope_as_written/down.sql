-- Back to jsonb (000010): the envelope parsed on every insert.
SET LOCAL lock_timeout = '5s';
LOCK TABLE outbox_log IN ACCESS EXCLUSIVE MODE;

DROP VIEW outbox;
DROP VIEW outbox_pending;

ALTER TABLE outbox_log ALTER COLUMN envelope TYPE jsonb USING envelope::jsonb;

-- Both views as they were (000013 and 000010); they name the column, so they go and come back.
CREATE VIEW outbox_pending AS
SELECT o.*
  FROM outbox_lanes l
 CROSS JOIN LATERAL (
    SELECT *
      FROM outbox_log o
     WHERE o.lane = l.lane
       AND o.id > l.floor_id
       AND NOT pg_visible_in_snapshot(o.tx, l.done)
       AND NOT (l.window_end IS NOT NULL AND o.id <= l.window_last AND pg_visible_in_snapshot(o.tx, l.window_end))
    OFFSET 0) o;

CREATE VIEW outbox AS
SELECT id, event_id, topic, message_key, event_type, correlation_id, traceparent, envelope, created_at,
       (hashtext(message_key) & 1023) AS lane_bucket
  FROM outbox_log WHERE false;
