DROP TRIGGER order_status_notify ON orders;
DROP FUNCTION order_status_notify();
