CREATE OR REPLACE VIEW outbox_pending AS
SELECT o.*
  FROM outbox_log o JOIN outbox_lanes l ON l.lane = o.lane
 WHERE o.id > l.floor_id
   AND NOT pg_visible_in_snapshot(o.tx, l.done)
   AND NOT (l.window_end IS NOT NULL AND o.id <= l.window_last AND pg_visible_in_snapshot(o.tx, l.window_end));
