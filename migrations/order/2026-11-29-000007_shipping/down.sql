DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM orders WHERE status IN ('SHIPPING', 'SHIPPED')) THEN
        RAISE EXCEPTION 'orders are shipping or shipped; reverting would lose them';
    END IF;
END $$;
DROP INDEX orders_open_idx;
CREATE INDEX orders_open_idx ON orders (created_at) WHERE status IN ('PENDING', 'CANCELLING');
ALTER TABLE orders DROP COLUMN ship_idempotency_key;
ALTER TABLE orders DROP CONSTRAINT orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check
    CHECK (status IN ('PENDING', 'CONFIRMED', 'REJECTED', 'CANCELLING', 'CANCELLED'));
