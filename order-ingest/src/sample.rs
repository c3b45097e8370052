//! `order-ingest publish-sample`: synthetic OrderCompleted events in checkout's exact format,
//! for the local demo, the benchmarks and smoke tests.
//!
//! The entries have checkout's field layout (`eventId`, `eventType`, `payload`) and the payload
//! is a structured-mode CloudEvent built with cloudevents-sdk. Money is printed the way
//! checkout's serializer prints it (docs/compatibility.md §1.3): like a Java `double` (`10.0`, `4.4`), `0`
//! for an integral zero, and exponent form from 10^7 up (`1.2345678E7`).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, Utc};
use cloudevents::{EventBuilder as _, EventBuilderV10};
use uuid::Uuid;

/// Flags of `publish-sample`.
#[derive(Debug, Clone, clap::Args)]
pub struct PublishArgs {
    /// How many events to publish.
    #[arg(long, env = "SAMPLE_COUNT", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,

    /// Events per second (0: as fast as Redis takes them).
    #[arg(long, env = "SAMPLE_RATE", default_value_t = 0)]
    pub rate: u64,

    /// Number of distinct stores the orders are spread over (store numbers 1..=N).
    #[arg(long, env = "SAMPLE_STORES", default_value_t = 20, value_parser = clap::value_parser!(i32).range(1..=2000))]
    pub stores: i32,
}

/// A small deterministic generator (SplitMix64): sample data need not be secure, only varied.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `cents / 100` as checkout prints money (a Java `double` after a round trip through a map).
pub fn java_double(cents: i64) -> String {
    let negative = cents < 0;
    let cents = cents.unsigned_abs();
    let (units, fraction) = (cents / 100, cents % 100);
    let body = if units >= 10_000_000 {
        // Scientific form: d.dddE<exp>, trailing zeros dropped but at least one fraction digit.
        let digits = format!("{units}{fraction:02}");
        let exponent = digits.len() - 3;
        let mantissa = digits.trim_end_matches('0');
        let (first, rest) = mantissa.split_at(1);
        let rest = if rest.is_empty() { "0" } else { rest };
        format!("{first}.{rest}E{exponent}")
    } else {
        let fraction = format!("{fraction:02}");
        let fraction = fraction.trim_end_matches('0');
        format!(
            "{units}.{}",
            if fraction.is_empty() { "0" } else { fraction }
        )
    };
    if negative {
        format!("-{body}")
    } else {
        body
    }
}

const FULFILLMENT: [&str; 4] = ["DELIVERY", "PICKUP", "WILL_CALL", "IMMEDIATE"];
const PRODUCTS: [(&str, &str, i64); 5] = [
    ("SKU-100-BLU", "Trail Mug, blue", 1999),
    ("SKU-BAG", "Paper bag", 10),
    ("SKU-TENT-2P", "Two-person tent", 24_900),
    ("SKU-SOCK", "Wool socks", 1_450),
    ("SKU-LAMP", "Camp lamp", 3_995),
];

/// What fixes one sample order: the same values give the same order.
#[derive(Debug, Clone, Copy)]
pub struct SampleOrder {
    /// Varies everything else (store, items, discount, customer, fulfillment).
    pub seed: u64,
    pub id: Uuid,
    /// The store number is drawn from 1..=stores.
    pub stores: i32,
    pub created_at: DateTime<Utc>,
}

impl SampleOrder {
    /// An order with a fresh random id, created now.
    pub fn new(seed: u64, stores: i32) -> Self {
        Self {
            seed,
            id: Uuid::new_v4(),
            stores,
            created_at: Utc::now(),
        }
    }

    /// The order as checkout publishes it in `data.order`, money printed as checkout prints it.
    pub fn to_json(&self) -> String {
        let mut rng = Rng(self.seed);
        let order_id = self.id;
        let store = 1 + rng.below(self.stores as u64) as i32;
        let fulfillment = FULFILLMENT[rng.below(4) as usize];
        let mut subtotal = 0i64;
        let mut items = Vec::new();
        for _ in 0..=rng.below(3) {
            let (sku, name, price) = PRODUCTS[rng.below(PRODUCTS.len() as u64) as usize];
            let quantity = 1 + rng.below(4) as i64;
            subtotal += price * quantity;
            items.push(format!(
                r#"{{"productId":"prod-{sku}","sku":"{sku}","name":"{name}","quantity":{quantity},"unitPrice":{},"discountAmount":null,"lineTotal":{}}}"#,
                java_double(price),
                java_double(price * quantity)
            ));
        }
        let discount = if rng.below(3) == 0 { subtotal / 10 } else { 0 };
        let discounts = if discount > 0 {
            format!(
                r#"[{{"discountId":"disc-10","code":"SAVE10","description":"10% off","type":"PERCENTAGE","appliedAmount":{}}}]"#,
                java_double(discount)
            )
        } else {
            "[]".to_owned()
        };
        let tax = (subtotal - discount) * 8 / 100;
        let delivery_cost = if fulfillment == "DELIVERY" { 799 } else { 0 };
        let grand = subtotal - discount + tax + delivery_cost;
        let money_or_zero = |cents: i64| {
            if cents == 0 {
                "0".to_owned()
            } else {
                java_double(cents)
            }
        };
        let customer = rng.below(500);
        let created = self.created_at.to_rfc3339_opts(SecondsFormat::Micros, true);
        let details = match fulfillment {
            "DELIVERY" => format!(
                r#"{{"type":"DELIVERY","scheduledDate":null,"deliveryAddress":{{"street1":"{} Harbor Rd","street2":null,"city":"Portland","state":"ME","postalCode":"04101","country":"US"}},"pickupLocation":null,"instructions":null}}"#,
                1 + rng.below(200)
            ),
            "PICKUP" => r#"{"type":"PICKUP","scheduledDate":null,"deliveryAddress":null,"pickupLocation":"Front desk","instructions":null}"#.to_owned(),
            _ => "null".to_owned(),
        };
        format!(
            r#"{{"id":"{order_id}","storeNumber":{store},"orderNumber":"ORD-{store}-{simple}","customerId":"cust-{customer}","fulfillmentType":"{fulfillment}","fulfillmentDate":null,"reservationId":null,"subtotal":{subtotal},"discountTotal":{discount},"taxTotal":{tax},"fulfillmentCost":{delivery_cost},"grandTotal":{grand},"paymentStatus":"COMPLETED","paymentMethod":"CARD","paymentReference":"pay_{simple}","status":"PAID","lineItems":[{items}],"appliedDiscounts":{discounts},"customerSnapshot":{{"customerId":"cust-{customer}","firstName":"Sam","lastName":"Sample","email":"cust-{customer}@example.com","phone":null,"loyaltyTier":null}},"fulfillmentDetails":{details},"createdAt":"{created}","updatedAt":"{created}","createdBy":null,"sessionId":null}}"#,
            simple = &order_id.simple().to_string()[..12],
            subtotal = java_double(subtotal),
            discount = money_or_zero(discount),
            tax = money_or_zero(tax),
            delivery_cost = money_or_zero(delivery_cost),
            grand = java_double(grand),
            items = items.join(","),
        )
    }
}

/// One OrderCompleted CloudEvent as checkout would publish it; returns (event id, payload).
pub fn sample_event(seed: u64, stores: i32) -> anyhow::Result<(String, String)> {
    let sample = SampleOrder::new(seed, stores);
    let order_id = sample.id;
    let event_id = Uuid::new_v4().to_string();
    let order = sample.to_json();
    let data: serde_json::Value = serde_json::from_str(&format!(
        r#"{{"checkoutSessionId":"cs-{}","order":{order}}}"#,
        &Uuid::new_v4().simple().to_string()[..8]
    ))
    .context("sample order JSON")?;
    let event = EventBuilderV10::new()
        .id(event_id.clone())
        .source("urn:reactive-platform:checkout-service")
        .ty("org.example.checkout.OrderCompleted")
        .subject(order_id.to_string())
        .time(Utc::now())
        .data("application/json", data)
        .build()
        .context("building the CloudEvent")?;
    Ok((event_id, serde_json::to_string(&event)?))
}

/// Publishes `args.count` events on `stream_key`, pipelined, at `args.rate` per second. Every
/// pipeline names the one stream key, so on a cluster it goes whole to the node serving it.
pub async fn publish(
    client: crate::client::RedisClient,
    stream_key: &str,
    args: &PublishArgs,
) -> anyhow::Result<u64> {
    let mut conn = crate::stream::RedisConn::new(client, crate::retry::REDIS_COMMAND);
    let started = Instant::now();
    let chunk = if args.rate == 0 {
        500
    } else {
        args.rate.clamp(1, 500)
    };
    let seed = Utc::now().timestamp_micros().unsigned_abs();
    let mut published = 0;
    while published < args.count {
        let n = chunk.min(args.count - published);
        let mut pipe = redis::pipe();
        for i in 0..n {
            let (event_id, payload) = sample_event(seed.wrapping_add(published + i), args.stores)?;
            pipe.cmd("XADD")
                .arg(stream_key)
                .arg("*")
                .arg("eventId")
                .arg(event_id)
                .arg("eventType")
                .arg("org.example.checkout.OrderCompleted")
                .arg("payload")
                .arg(payload)
                .ignore();
        }
        conn.pipe::<()>(&pipe).await.context("XADD failed")?;
        published += n;
        if args.rate > 0 {
            // Pace by the total elapsed time, so rounding never accumulates.
            let due = Duration::from_secs_f64(published as f64 / args.rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
    Ok(published)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_printed_like_checkout_prints_it() {
        assert_eq!(java_double(1000), "10.0");
        assert_eq!(java_double(440), "4.4");
        assert_eq!(java_double(1999), "19.99");
        assert_eq!(java_double(1), "0.01");
        assert_eq!(java_double(1_234_567_800), "1.2345678E7");
        assert_eq!(java_double(1_000_000_000), "1.0E7");
        assert_eq!(java_double(2_222_222_123), "2.222222123E7");
    }

    #[test]
    fn sample_events_are_valid_orders() {
        for seed in 0..200 {
            let (_, payload) = sample_event(seed, 20).unwrap();
            let event: serde_json::Value = serde_json::from_str(&payload).unwrap();
            assert_eq!(event["type"], "org.example.checkout.OrderCompleted");
            let order: order_store::NewOrder =
                serde_json::from_value(event["data"]["order"].clone()).unwrap();
            order.validate().unwrap();
        }
    }
}
