-- Back to the balance kept in the product row, from each SKU's newest level.
ALTER TABLE products ADD COLUMN on_hand INTEGER, ADD COLUMN reserved INTEGER;
UPDATE products p SET on_hand = s.on_hand, reserved = s.reserved FROM stock s WHERE s.sku = p.sku;
ALTER TABLE products
    ALTER COLUMN on_hand SET NOT NULL,
    ALTER COLUMN reserved SET NOT NULL,
    ADD CONSTRAINT products_reserved_within_on_hand CHECK (reserved >= 0 AND reserved <= on_hand);
ALTER TABLE products ADD COLUMN available INTEGER NOT NULL GENERATED ALWAYS AS (on_hand - reserved) STORED;
DROP VIEW stock;
DROP TRIGGER products_first_level ON products;
DROP FUNCTION stock_levels_first();
DROP TABLE stock_levels;
