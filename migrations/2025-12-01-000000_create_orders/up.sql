-- The orders table exactly as the existing service's Flyway V1__create_orders_table.sql
-- created it (docs/compatibility.md §2). Every statement is IF NOT EXISTS so that running this
-- migration on a database that Flyway already created is a no-op: the table and its data are
-- adopted, and only diesel's bookkeeping table is added.
CREATE TABLE IF NOT EXISTS orders (
    id                  UUID PRIMARY KEY,
    store_number        INTEGER        NOT NULL,
    order_number        VARCHAR(50)    NOT NULL UNIQUE,
    customer_id         VARCHAR(100),
    fulfillment_type    VARCHAR(20)    NOT NULL,
    fulfillment_date    TIMESTAMPTZ,
    reservation_id      UUID,
    subtotal            DECIMAL(12, 2) NOT NULL,
    discount_total      DECIMAL(12, 2) NOT NULL DEFAULT 0,
    tax_total           DECIMAL(12, 2) NOT NULL DEFAULT 0,
    fulfillment_cost    DECIMAL(12, 2) NOT NULL DEFAULT 0,
    grand_total         DECIMAL(12, 2) NOT NULL,
    payment_status      VARCHAR(20)    NOT NULL DEFAULT 'PENDING',
    payment_method      VARCHAR(50),
    payment_reference   VARCHAR(100),
    status              VARCHAR(20)    NOT NULL DEFAULT 'CREATED',
    line_items          JSONB          NOT NULL,
    applied_discounts   JSONB          NOT NULL DEFAULT '[]',
    customer_snapshot   JSONB,
    fulfillment_details JSONB,
    created_at          TIMESTAMPTZ    NOT NULL DEFAULT NOW(),
    updated_at          TIMESTAMPTZ    NOT NULL DEFAULT NOW(),
    created_by          VARCHAR(50),
    session_id          UUID
);

CREATE INDEX IF NOT EXISTS idx_orders_store_number     ON orders (store_number);
CREATE INDEX IF NOT EXISTS idx_orders_customer_id      ON orders (customer_id);
CREATE INDEX IF NOT EXISTS idx_orders_status           ON orders (status);
CREATE INDEX IF NOT EXISTS idx_orders_created_at       ON orders (created_at DESC);
CREATE INDEX IF NOT EXISTS idx_orders_fulfillment_type ON orders (fulfillment_type);
CREATE INDEX IF NOT EXISTS idx_orders_fulfillment_date ON orders (fulfillment_date);
CREATE INDEX IF NOT EXISTS idx_orders_line_items       ON orders USING GIN (line_items);
