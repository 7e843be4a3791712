DROP TABLE stock_ledger;
DROP TABLE reservations;
DROP TABLE products;
