//! An order's states and the moves between them.
//!
//! ```text
//! PENDING ──► CONFIRMED ──► PAID ──► FULFILLED
//!    │            │           │
//!    ├────────────┴───────────┴──► CANCELLED   (customer, or the sweeper)
//!    └────────────┴──────────────► FAILED      (a checkout step failed)
//! ```
//!
//! Also the order's ids and lines, and the saga's states, steps and
//! phases, each stored under the exact name its `as_str` gives.

use bv_service::Money;
use serde::{Deserialize, Serialize};

/// Declares a string id: a newtype that is its string in JSON and SQL.
macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The id as stored and shown.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_string())
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// An order's id: also its stock reservation's id and its payment's id.
    OrderId
);
string_id!(
    /// A customer: the subject of their access token.
    CustomerId
);
string_id!(
    /// A catalogue product.
    ProductId
);

/// One line of an order, priced from the catalogue at checkout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderLine {
    /// The product.
    pub product_id: ProductId,
    /// Its SKU.
    pub sku: String,
    /// Its name.
    pub name: String,
    /// Its price at checkout.
    pub unit_price: Money,
    /// How many (positive).
    pub quantity: i64,
    /// `unit_price × quantity`.
    pub line_total: Money,
}

/// Declares a stored name enum: `ALL`, `as_str` and `parse`.
macro_rules! stored_names {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $s:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl $name {
            /// Every one, in order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The name stored (and shown in metrics and events).
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $s,)*
                }
            }

            /// The one named `s`.
            pub fn parse(s: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|x| x.as_str() == s)
            }
        }
    };
}

stored_names!(
    /// Where a checkout saga is (`orders.sagas.state`).
    SagaState {
        /// The checkout is working.
        Running => "running",
        /// The sweeper took it over, or a failure's compensation did not
        /// complete.
        Compensating => "compensating",
        /// Nothing is held any more that should not be.
        Finished => "finished",
    }
);

stored_names!(
    /// A step of the checkout saga (`orders.sagas.step`, `saga_log.step`).
    Step {
        /// The order, its saga and `order.placed`, in one transaction.
        CreateOrder => "create-order",
        /// Reserve the stock (inventory).
        ReserveStock => "reserve-stock",
        /// Authorize the total (payment).
        AuthorizePayment => "authorize-payment",
        /// Capture it (payment).
        CapturePayment => "capture-payment",
        /// Empty the customer's cart once paid (best effort).
        ClearCart => "clear-cart",
        /// Give back what a failed checkout holds.
        Compensate => "compensate",
    }
);

stored_names!(
    /// A saga log entry's phase (`saga_log.phase`).
    Phase {
        /// Written before the step is attempted.
        Started => "started",
        /// The step succeeded.
        Done => "done",
        /// The step failed (`detail` says why).
        Failed => "failed",
    }
);

/// Where an order is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Created; its stock is being reserved.
    Pending,
    /// Stock reserved; payment in progress.
    Confirmed,
    /// Paid; waiting to ship.
    Paid,
    /// Shipped (the reservation committed).
    Fulfilled,
    /// Cancelled with everything given back.
    Cancelled,
    /// The checkout failed and gave back what it held.
    Failed,
}

impl Status {
    /// Every status.
    pub const ALL: [Status; 6] = [
        Status::Pending,
        Status::Confirmed,
        Status::Paid,
        Status::Fulfilled,
        Status::Cancelled,
        Status::Failed,
    ];

    /// The statuses a customer (or the sweeper) may cancel from.
    pub const CANCELLABLE: [Status; 3] = [Status::Pending, Status::Confirmed, Status::Paid];

    /// The statuses a failing checkout may leave.
    pub const FAILABLE: [Status; 2] = [Status::Pending, Status::Confirmed];

    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Confirmed => "CONFIRMED",
            Status::Paid => "PAID",
            Status::Fulfilled => "FULFILLED",
            Status::Cancelled => "CANCELLED",
            Status::Failed => "FAILED",
        }
    }

    /// The status named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// `status IN (…)` for `statuses` (constant names only, so no injection).
pub fn status_in(statuses: &[Status]) -> String {
    let names: Vec<String> = statuses
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    format!("status IN ({})", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_is_stored_under_a_name_that_parses_back() {
        for status in Status::ALL {
            assert_eq!(Status::parse(status.as_str()), Some(status));
        }
        assert_eq!(Status::parse("paid"), None, "names are upper case");
        assert_eq!(Status::parse(""), None);
    }

    #[test]
    fn saga_names_are_the_stored_strings_and_parse_back() {
        let states: Vec<_> = SagaState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(states, ["running", "compensating", "finished"]);
        let steps: Vec<_> = Step::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            steps,
            [
                "create-order",
                "reserve-stock",
                "authorize-payment",
                "capture-payment",
                "clear-cart",
                "compensate"
            ]
        );
        let phases: Vec<_> = Phase::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(phases, ["started", "done", "failed"]);
        for &s in SagaState::ALL {
            assert_eq!(SagaState::parse(s.as_str()), Some(s));
        }
        for &s in Step::ALL {
            assert_eq!(Step::parse(s.as_str()), Some(s));
        }
        for &p in Phase::ALL {
            assert_eq!(Phase::parse(p.as_str()), Some(p));
        }
        assert_eq!(Step::parse("other"), None);
        assert_eq!(SagaState::parse("Running"), None);
    }

    #[test]
    fn ids_are_their_strings_in_json() {
        let id = OrderId::from("0b6c");
        assert_eq!(serde_json::to_string(&id).unwrap(), r#""0b6c""#);
        assert_eq!(serde_json::from_str::<OrderId>(r#""0b6c""#).unwrap(), id);
        assert_eq!(CustomerId::from("c-1").to_string(), "c-1");
    }

    #[test]
    fn an_order_line_round_trips_through_its_stored_json() {
        // As Postgres gives back the jsonb column.
        let stored = r#"{"sku": "SKU-1", "name": "Mug", "quantity": 2, "lineTotal": {"amount": 2598, "currency": "EUR"}, "productId": "p-1", "unitPrice": {"amount": 1299, "currency": "EUR"}}"#;
        let line: OrderLine = serde_json::from_str(stored).unwrap();
        assert_eq!(line.product_id.as_str(), "p-1");
        assert_eq!((line.quantity, line.line_total.amount()), (2, 2598));
        let back = serde_json::to_value(&line).unwrap();
        let original: serde_json::Value = serde_json::from_str(stored).unwrap();
        assert_eq!(back, original);
    }

    #[test]
    fn status_in_lists_the_names_quoted() {
        assert_eq!(
            status_in(&Status::FAILABLE),
            "status IN ('PENDING', 'CONFIRMED')"
        );
    }
}
