-- Fails if two customers used the same key since the change: global keys cannot hold them.
DROP INDEX orders_customer_created_at_idx;
DROP INDEX orders_customer_idempotency_key;
ALTER TABLE orders ADD CONSTRAINT orders_idempotency_key_key UNIQUE (idempotency_key);
