-- Orders ship (decision 0019): CONFIRMED → SHIPPING (a fulfilment operator asked, inventory
-- is taking the stock out) → SHIPPED. The key of the ship request is kept so that its retry
-- is recognised.
ALTER TABLE orders DROP CONSTRAINT orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check
    CHECK (status IN ('PENDING', 'CONFIRMED', 'REJECTED', 'CANCELLING', 'CANCELLED', 'SHIPPING', 'SHIPPED'));
ALTER TABLE orders ADD COLUMN ship_idempotency_key TEXT;
-- Orders waiting for an answer from inventory, for the checker and the operator's views.
DROP INDEX orders_open_idx;
CREATE INDEX orders_open_idx ON orders (created_at) WHERE status IN ('PENDING', 'CANCELLING', 'SHIPPING');
