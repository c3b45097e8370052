-- pgbench: the same update WITH the outbox, as order-api commits it: BEGIN, the update, the
-- insert of its event row (data: the changed order as JSON, the size of a real event's data),
-- COMMIT. The difference to bench/pgbench_update.sql is what the outbox costs the database.
\set n random(1, :orders)
\set dock random(1, 9)
BEGIN;
UPDATE orders SET
  fulfillment_details = COALESCE(fulfillment_details, jsonb_build_object('type', fulfillment_type,
    'scheduledDate', NULL, 'deliveryAddress', NULL, 'pickupLocation', NULL, 'instructions', NULL))
    || jsonb_build_object('pickupLocation', 'Dock ' || :dock),
  fulfillment_date = COALESCE(NULL::timestamptz, fulfillment_date),
  updated_at = now()
WHERE id = md5(:n::text)::uuid
RETURNING *;
INSERT INTO order_outbox (event_id, order_id, event_time, traceparent, data)
SELECT gen_random_uuid(), o.id, o.updated_at, NULL,
       json_build_object('change', 'FULFILLMENT_UPDATED', 'previousStatus', o.status, 'order', row_to_json(o))::text
FROM orders o WHERE o.id = md5(:n::text)::uuid;
COMMIT;
