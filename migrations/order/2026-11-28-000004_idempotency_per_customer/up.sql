-- Idempotency keys belong to a customer (decision 0003, revised): the same key from two
-- customers makes two orders, and no answer names another customer's order.
ALTER TABLE orders DROP CONSTRAINT orders_idempotency_key_key;
CREATE UNIQUE INDEX orders_customer_idempotency_key ON orders (customer_id, idempotency_key);
-- A customer's orders, newest first (GET /orders lists only the caller's).
CREATE INDEX orders_customer_created_at_idx ON orders (customer_id, created_at DESC, id DESC);
