-- The customer is also told when the order ships (decision 0019).
ALTER TABLE notifications DROP CONSTRAINT notifications_kind_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_kind_check
    CHECK (kind IN ('CONFIRMED', 'REJECTED', 'CANCELLED', 'SHIPPED'));
