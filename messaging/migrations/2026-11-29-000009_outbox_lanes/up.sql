-- Lanes (relay/src/lanes.rs): every row gets a bucket from its message key, the order id, so
-- that all the rows of one order fall into one lane, whatever the number of lanes. Postgres
-- computes it, for the rows already waiting as for new ones, so nothing written before
-- this migration or by a service that does not know about lanes goes unpublished.
ALTER TABLE outbox
    ADD COLUMN lane_bucket INTEGER NOT NULL GENERATED ALWAYS AS (hashtext(message_key) & 1023) STORED;
