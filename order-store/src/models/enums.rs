//! The order's enumerations, stored by name in `VARCHAR(20)` columns.

use std::fmt;
use std::str::FromStr;

use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::Text;
use serde::{Deserialize, Serialize};

/// A name that is not one of the enumeration's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} value: {value:?}")]
pub struct ParseEnumError {
    pub kind: &'static str,
    pub value: String,
}

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident, $kind:literal { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AsExpression, FromSqlRow)]
        #[diesel(sql_type = Text)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ParseEnumError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(ParseEnumError { kind: $kind, value: s.to_owned() }),
                }
            }
        }

        impl ToSql<Text, Pg> for $name {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
                <str as ToSql<Text, Pg>>::to_sql(self.as_str(), out)
            }
        }

        impl FromSql<Text, Pg> for $name {
            fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
                let text = std::str::from_utf8(bytes.as_bytes())?;
                Ok(text.parse()?)
            }
        }
    };
}

string_enum!(
    /// How the order reaches the customer.
    FulfillmentType, "fulfillmentType" {
        Delivery => "DELIVERY",
        Pickup => "PICKUP",
        WillCall => "WILL_CALL",
        Immediate => "IMMEDIATE",
    }
);

string_enum!(
    PaymentStatus, "paymentStatus" {
        Pending => "PENDING",
        Authorized => "AUTHORIZED",
        Completed => "COMPLETED",
        Failed => "FAILED",
        Refunded => "REFUNDED",
    }
);

string_enum!(
    /// The order's lifecycle; checkout publishes `PAID`.
    OrderStatus, "status" {
        Created => "CREATED",
        Paid => "PAID",
        Processing => "PROCESSING",
        Shipped => "SHIPPED",
        Delivered => "DELIVERED",
        Cancelled => "CANCELLED",
        Refunded => "REFUNDED",
    }
);

impl OrderStatus {
    /// The transition rules of docs/compatibility.md §4, in the one place they are written down.
    pub fn can_become(self, next: OrderStatus) -> bool {
        use OrderStatus::{Cancelled, Created, Delivered, Paid, Processing, Refunded, Shipped};
        matches!(
            (self, next),
            (Created, Paid | Cancelled)
                | (Paid, Processing | Cancelled)
                | (Processing, Shipped | Cancelled)
                | (Shipped, Delivered)
                | (Delivered, Refunded)
        )
    }

    /// Every status from which `next` may be reached: the compare-and-set guard in SQL.
    pub fn predecessors(next: OrderStatus) -> Vec<OrderStatus> {
        Self::ALL
            .iter()
            .copied()
            .filter(|s| s.can_become(next))
            .collect()
    }

    /// Statuses from which an order may be cancelled.
    pub fn is_cancellable(self) -> bool {
        self.can_become(OrderStatus::Cancelled)
    }

    /// Case-insensitive parse, as the REST search accepts `status=paid`.
    pub fn parse_ignore_case(s: &str) -> Result<Self, ParseEnumError> {
        s.to_ascii_uppercase().parse().map_err(|_| ParseEnumError {
            kind: "status",
            value: s.to_owned(),
        })
    }
}
