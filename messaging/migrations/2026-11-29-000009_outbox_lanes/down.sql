ALTER TABLE outbox DROP COLUMN lane_bucket;
