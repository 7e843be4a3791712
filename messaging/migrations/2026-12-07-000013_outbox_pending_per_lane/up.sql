-- What waits in the outbox, read lane by lane on the (lane, id) index.
--
-- The view from 000010 joined the lanes to the log, and the planner hashed the join: it
-- scanned every row the log holds to find the few above the floors. That is cheap while
-- the log is truncated behind the lanes, but while a long transaction or a pg_dump keeps its
-- partitions (decision 0026), the log grows and every count of the backlog (once a second
-- per relay, and by /health) walked all of it: 42 ms for 120,000 held rows, 0.85 ms this way.
-- OFFSET 0 keeps the planner from flattening the subquery back into the same join, so each
-- lane is one range scan from its floor. The rows and their columns are the same.
CREATE OR REPLACE VIEW outbox_pending AS
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
