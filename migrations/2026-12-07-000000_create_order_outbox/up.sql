-- The transactional outbox of order changes (docs/compatibility.md §8). Each change the API
-- commits inserts one row here in the same transaction; the relay in order-ingest publishes the
-- rows to the `orders:updated` stream in id order and then deletes exactly the ids it published.
--
-- `id` becomes the event's `sequence`: two changes of one order are serialised by the order's
-- row lock, so their ids are in commit order. Across orders ids are not in commit order (an id
-- is taken at insert, not at commit), which is why published rows are deleted by their ids and
-- never "up to" one.
--
-- The table is insert-then-delete and usually near empty, so autovacuum is told to clean it
-- after a fixed number of dead rows instead of a fraction of its (tiny) size, without the cost
-- delay that would let dead rows pile up under a steady write load.
--
-- IF NOT EXISTS, like the first migration, so that running it twice changes nothing.
CREATE TABLE IF NOT EXISTS order_outbox (
    id          BIGSERIAL   PRIMARY KEY,
    event_id    UUID        NOT NULL,
    order_id    UUID        NOT NULL,
    event_time  TIMESTAMPTZ NOT NULL,
    traceparent TEXT,
    data        TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT NOW()
) WITH (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 1000,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);
