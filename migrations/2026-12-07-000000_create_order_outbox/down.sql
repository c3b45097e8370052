-- Drops the outbox with every event not yet published: run it only once the relay has
-- drained it (order_outbox_backlog at 0).
DROP TABLE IF EXISTS order_outbox;
