-- Stock that ships (decision 0019): each SKU has what is in the warehouse (on_hand) and what
-- of it is promised to confirmed orders (reserved); what can still be sold is the difference.
-- Nothing has shipped before this migration, so everything is still on hand, and what the
-- ledger took from `available` is what is reserved.
ALTER TABLE products
    ADD COLUMN on_hand  INTEGER,
    ADD COLUMN reserved INTEGER;
UPDATE products SET on_hand = initial_stock, reserved = initial_stock - available;
ALTER TABLE products
    ALTER COLUMN on_hand SET NOT NULL,
    ALTER COLUMN reserved SET NOT NULL,
    ADD CONSTRAINT products_reserved_within_on_hand CHECK (reserved >= 0 AND reserved <= on_hand),
    DROP COLUMN available;
-- Kept as a column, computed by Postgres, so readers and the books see one value.
ALTER TABLE products ADD COLUMN available INTEGER NOT NULL GENERATED ALWAYS AS (on_hand - reserved) STORED;

-- A reservation ends SHIPPED when its stock leaves the warehouse.
ALTER TABLE reservations DROP CONSTRAINT reservations_status_check;
ALTER TABLE reservations ADD CONSTRAINT reservations_status_check
    CHECK (status IN ('RESERVED', 'REJECTED', 'RELEASED', 'CANCELLED', 'SHIPPED'));

-- A shipment is a ledger row too: its delta is what left on_hand (and reserved).
ALTER TABLE stock_ledger DROP CONSTRAINT stock_ledger_reason_check;
ALTER TABLE stock_ledger ADD CONSTRAINT stock_ledger_reason_check CHECK (reason IN ('reserve', 'release', 'ship'));
