CREATE TABLE orders (
    id               UUID        PRIMARY KEY,
    customer_id      TEXT        NOT NULL,
    -- One order per key, whoever sends it: a retry finds the order its first attempt made.
    idempotency_key  TEXT        NOT NULL UNIQUE,
    -- SHA-256 of the validated request, to tell a retry from a different request reusing a key.
    request_hash     TEXT        NOT NULL,
    status           TEXT        NOT NULL
        CHECK (status IN ('PENDING', 'CONFIRMED', 'REJECTED', 'CANCELLING', 'CANCELLED')),
    rejection_reason TEXT,
    correlation_id   TEXT        NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX orders_created_at_idx ON orders (created_at DESC, id DESC);
CREATE INDEX orders_open_idx ON orders (created_at) WHERE status IN ('PENDING', 'CANCELLING');

CREATE TABLE order_lines (
    order_id UUID    NOT NULL REFERENCES orders (id),
    line_no  INTEGER NOT NULL,
    sku      TEXT    NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, line_no),
    UNIQUE (order_id, sku)
);

-- Every status an order has been in, in order, with when and why.
CREATE TABLE order_status_history (
    id       BIGSERIAL   PRIMARY KEY,
    order_id UUID        NOT NULL REFERENCES orders (id),
    status   TEXT        NOT NULL,
    reason   TEXT,
    at       TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX order_status_history_order_idx ON order_status_history (order_id, id);
