DROP INDEX IF EXISTS idx_orders_customer_created_id;
DROP INDEX IF EXISTS idx_orders_store_created_id;
