-- What the notifications service knows and owes. It learns who placed an order from
-- `OrderPlaced` and what became of it from inventory's decisions; each outcome becomes one
-- row here, written in the inbox transaction of the event that decided it. Sending happens
-- later, outside any event's transaction (decision 0014): a row is sent, then marked sent.

-- Whose order it is: the address of its notifications.
CREATE TABLE customer_orders (
    order_id    UUID        PRIMARY KEY,
    customer_id TEXT        NOT NULL,
    placed_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE notifications (
    -- The id of the event that decided the outcome: the same event always makes the same
    -- row, and the same Message-ID, however often it is delivered or sent.
    id              UUID        PRIMARY KEY,
    order_id        UUID        NOT NULL,
    kind            TEXT        NOT NULL CHECK (kind IN ('CONFIRMED', 'REJECTED', 'CANCELLED')),
    -- For people: why an order was rejected.
    detail          TEXT,
    message_id      TEXT        NOT NULL UNIQUE,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    attempts        INTEGER     NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_error      TEXT,
    recipient       TEXT,
    sent_at         TIMESTAMPTZ,
    -- Given up: the server refused the message for good, or every attempt failed.
    failed_at       TIMESTAMPTZ,
    -- One message per outcome of an order, even if an outcome were ever announced twice.
    UNIQUE (order_id, kind)
);

-- The sender's queue: only rows still owed are indexed.
CREATE INDEX notifications_due_idx ON notifications (next_attempt_at)
    WHERE sent_at IS NULL AND failed_at IS NULL;
