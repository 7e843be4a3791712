-- Wakes requests waiting for an order's outcome, in whichever order-service instance they
-- wait: the notification is delivered when the transaction that changed the status commits.
CREATE FUNCTION order_status_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('order_status', NEW.id::text);
    RETURN NULL;
END $$;

CREATE TRIGGER order_status_notify AFTER UPDATE OF status ON orders
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION order_status_notify();
