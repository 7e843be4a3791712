DROP FUNCTION outbox_last_id();
