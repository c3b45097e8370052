-- pgbench: the ceiling for GET /orders?storeNumber=N&size=20. The statement order-api's
-- `order_store::orders::search` runs for a page that has rows: the page (every column, newest
-- first with the id as tie-break, LIMIT 20 OFFSET 0), each row carrying the count with the same
-- filter as an uncorrelated scalar subquery, so page and count are one snapshot and one round
-- trip. N is drawn at random from 1..stores per transaction, as the wrk script draws it per
-- request; the limit and offset are bind parameters, as diesel sends them.
\set store random(1, :stores)
\set size 20
\set offset 0
SELECT id, store_number, order_number, customer_id, fulfillment_type, fulfillment_date, reservation_id, subtotal, discount_total, tax_total, fulfillment_cost, grand_total, payment_status, payment_method, payment_reference, status, line_items, applied_discounts, customer_snapshot, fulfillment_details, created_at, updated_at, created_by, session_id, (SELECT COUNT(*) FROM orders WHERE store_number = :store) FROM orders WHERE store_number = :store ORDER BY created_at DESC, id DESC LIMIT :size OFFSET :offset;
