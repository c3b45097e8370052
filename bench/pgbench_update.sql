-- pgbench: the statement order-api sends for PATCH /orders/{id}/fulfillment, WITHOUT the
-- outbox: the jsonb merge, the fulfillment date kept, updatedAt set, the row returned.
-- Seeded ids are md5(n)::uuid for n in 1..orders (order-bench seed).
\set n random(1, :orders)
\set dock random(1, 9)
UPDATE orders SET
  fulfillment_details = COALESCE(fulfillment_details, jsonb_build_object('type', fulfillment_type,
    'scheduledDate', NULL, 'deliveryAddress', NULL, 'pickupLocation', NULL, 'instructions', NULL))
    || jsonb_build_object('pickupLocation', 'Dock ' || :dock),
  fulfillment_date = COALESCE(NULL::timestamptz, fulfillment_date),
  updated_at = now()
WHERE id = md5(:n::text)::uuid
RETURNING *;
