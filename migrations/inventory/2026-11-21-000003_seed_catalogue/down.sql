DELETE FROM products
WHERE sku IN ('KEYBOARD-01', 'MOUSE-01', 'MUG-01', 'LAMP-01', 'CABLE-01', 'POSTER-01')
  AND NOT EXISTS (SELECT 1 FROM stock_ledger WHERE stock_ledger.sku = products.sku);
