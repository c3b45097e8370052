// @generated automatically by Diesel CLI.

diesel::table! {
    order_outbox (id) {
        id -> Int8,
        event_id -> Uuid,
        order_id -> Uuid,
        event_time -> Timestamptz,
        traceparent -> Nullable<Text>,
        data -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    orders (id) {
        id -> Uuid,
        store_number -> Int4,
        #[max_length = 50]
        order_number -> Varchar,
        #[max_length = 100]
        customer_id -> Nullable<Varchar>,
        #[max_length = 20]
        fulfillment_type -> Varchar,
        fulfillment_date -> Nullable<Timestamptz>,
        reservation_id -> Nullable<Uuid>,
        subtotal -> Numeric,
        discount_total -> Numeric,
        tax_total -> Numeric,
        fulfillment_cost -> Numeric,
        grand_total -> Numeric,
        #[max_length = 20]
        payment_status -> Varchar,
        #[max_length = 50]
        payment_method -> Nullable<Varchar>,
        #[max_length = 100]
        payment_reference -> Nullable<Varchar>,
        #[max_length = 20]
        status -> Varchar,
        line_items -> Jsonb,
        applied_discounts -> Jsonb,
        customer_snapshot -> Nullable<Jsonb>,
        fulfillment_details -> Nullable<Jsonb>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        #[max_length = 50]
        created_by -> Nullable<Varchar>,
        session_id -> Nullable<Uuid>,
    }
}

diesel::allow_tables_to_appear_in_same_query!(order_outbox, orders,);
