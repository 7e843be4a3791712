-- Stock as a series (decision 0036). Every movement appends the SKU's balance after it, one
-- row, never updated: the newest row of a SKU is its stock. An UPDATE of one `products` row
-- per movement left a version per movement that no VACUUM may remove while any snapshot
-- older than them is held, and every later movement walked all of them; the newest row of a
-- series is found by one step down its index, however long the series or the snapshot.
--
-- It takes `products` alone, so that no movement runs while the levels are copied; a pg_dump
-- holds the table for its whole run, and rather than queue behind one (and have every movement
-- queue behind this) the migration gives up after a few seconds, the service does not start,
-- and its next start tries again (docs/runbook.md, "Upgrading to stock levels").
SET LOCAL lock_timeout = '5s';
LOCK TABLE products IN ACCESS EXCLUSIVE MODE;

CREATE TABLE stock_levels (
    sku        TEXT        NOT NULL REFERENCES products (sku),
    -- 0 when the product entered the catalogue, then one more per movement: a writer appends
    -- the row after the newest it read, so two writers that read the same row cannot both
    -- append (the key refuses the second) even if one forgot the product's lock.
    seq        BIGINT      NOT NULL CHECK (seq >= 0),
    on_hand    INTEGER     NOT NULL,
    reserved   INTEGER     NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (sku, seq),
    CONSTRAINT stock_levels_reserved_within_on_hand CHECK (reserved >= 0 AND reserved <= on_hand)
);
INSERT INTO stock_levels (sku, seq, on_hand, reserved) SELECT sku, 0, on_hand, reserved FROM products;

-- A product enters the catalogue with its initial stock on hand and nothing reserved, however
-- it is inserted (the admin API, an operator's psql, a test), so every product has a level.
CREATE FUNCTION stock_levels_first() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO stock_levels (sku, seq, on_hand, reserved) VALUES (NEW.sku, 0, NEW.initial_stock, 0);
    RETURN NULL;
END $$;
CREATE TRIGGER products_first_level AFTER INSERT ON products
    FOR EACH ROW EXECUTE FUNCTION stock_levels_first();

-- `products` is the catalogue now, and the row a movement locks; it is no longer updated.
ALTER TABLE products DROP COLUMN available, DROP CONSTRAINT products_reserved_within_on_hand,
    DROP COLUMN on_hand, DROP COLUMN reserved;

-- Each product with its stock now: what the API shows and the books check.
CREATE VIEW stock AS
SELECT p.sku, p.name, p.initial_stock, l.on_hand, l.reserved, l.on_hand - l.reserved AS available
FROM products p
CROSS JOIN LATERAL (
    SELECT s.on_hand, s.reserved FROM stock_levels s WHERE s.sku = p.sku ORDER BY s.seq DESC LIMIT 1
) l;
