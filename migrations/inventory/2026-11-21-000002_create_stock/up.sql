CREATE TABLE products (
    sku           TEXT        PRIMARY KEY,
    name          TEXT        NOT NULL,
    -- Stock when the product entered the catalogue; with the ledger it proves conservation:
    -- initial_stock + sum(ledger.delta) = available.
    initial_stock INTEGER     NOT NULL CHECK (initial_stock >= 0),
    available     INTEGER     NOT NULL CHECK (available >= 0),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- What inventory decided for each order it has seen.
CREATE TABLE reservations (
    order_id   UUID        PRIMARY KEY,
    status     TEXT        NOT NULL CHECK (status IN ('RESERVED', 'REJECTED', 'RELEASED', 'CANCELLED')),
    reason     TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per change of stock.
CREATE TABLE stock_ledger (
    id         BIGSERIAL   PRIMARY KEY,
    order_id   UUID        NOT NULL,
    sku        TEXT        NOT NULL REFERENCES products (sku),
    delta      INTEGER     NOT NULL CHECK (delta <> 0),
    reason     TEXT        NOT NULL CHECK (reason IN ('reserve', 'release')),
    event_id   UUID        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- A second line of defence behind the inbox: an order can be reserved, and released,
    -- at most once per SKU, whatever happens upstream.
    UNIQUE (order_id, sku, reason)
);
