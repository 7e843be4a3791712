-- A catalogue with known stock, so a fresh stack takes orders at once.
-- POSTER-01 is deliberately scarce, to see rejections quickly.
INSERT INTO products (sku, name, initial_stock, available) VALUES
    ('KEYBOARD-01', 'Mechanical keyboard', 1000, 1000),
    ('MOUSE-01',    'Wireless mouse',      2000, 2000),
    ('MUG-01',      'Coffee mug',          5000, 5000),
    ('LAMP-01',     'Desk lamp',            500,  500),
    ('CABLE-01',    'USB-C cable',        10000, 10000),
    ('POSTER-01',   'Limited print',          5,    5)
ON CONFLICT (sku) DO NOTHING;
