-- Listings by store and by customer are ordered newest first with the id as tie-break and
-- paged with LIMIT/OFFSET or a (created_at, id) cursor. These indexes answer them without a
-- sort, whatever the number of orders a store or customer has.
CREATE INDEX IF NOT EXISTS idx_orders_store_created_id
    ON orders (store_number, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS idx_orders_customer_created_id
    ON orders (customer_id, created_at DESC, id DESC);
