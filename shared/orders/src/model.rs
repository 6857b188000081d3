//! An order's states and the moves between them.
//!
//! ```text
//! PENDING ──► CONFIRMED ──► PAID ──► FULFILLED
//!    │            │           │
//!    ├────────────┴───────────┴──► CANCELLED   (customer, or the sweeper)
//!    └────────────┴──────────────► FAILED      (a checkout step failed)
//! ```

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
    fn status_in_lists_the_names_quoted() {
        assert_eq!(
            status_in(&Status::FAILABLE),
            "status IN ('PENDING', 'CONFIRMED')"
        );
    }
}
