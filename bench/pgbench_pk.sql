-- pgbench: one order by primary key, every column (the ceiling for GET /orders/{id}).
-- Seeded ids are md5(n)::uuid for n in 1..orders (order-bench seed).
\set n random(1, :orders)
SELECT * FROM orders WHERE id = md5(:n::text)::uuid;
