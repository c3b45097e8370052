//! The order model: what checkout publishes, what the table stores, what clients read.

mod enums;
pub mod instant;
mod jsonb;
pub mod money;
mod order;

pub use enums::{FulfillmentType, OrderStatus, ParseEnumError, PaymentStatus};
pub use order::{has_nul, NUL_MESSAGE};
pub use order::{
    AppliedDiscount, CustomerSnapshot, DeliveryAddress, FulfillmentDetails, LineItem, NewOrder,
    Order, STORE_NUMBERS,
};
