//! Which events notify whom, and with what.

use bv_events_guest::Event;
use serde_json::{json, Value};

/// One notification an event gives one customer.
#[derive(Debug, Clone)]
pub struct Notice {
    /// The customer.
    pub customer: String,
    /// The event's type without prefix and version, e.g. `order.paid`.
    pub kind: String,
    /// A line for a person.
    pub title: String,
    /// What a client needs to act on it.
    pub data: Value,
}

fn money(v: &Value) -> String {
    match (v["amount"].as_i64(), v["currency"].as_str()) {
        (Some(amount), Some(currency)) => {
            format!("{}.{:02} {currency}", amount / 100, amount % 100)
        }
        _ => String::new(),
    }
}

/// The event's kind: `com.bitvelocity.order.paid.v1` → `order.paid`.
pub fn kind(ty: &str) -> String {
    let name = ty.strip_prefix("com.bitvelocity.").unwrap_or(ty);
    name.rsplit_once(".v").map_or(name, |(n, _)| n).to_owned()
}

/// The notices of `event`; `customer_of_order` answers the customer of an
/// order (payment events do not name one).
pub fn notices(event: &Event<Value>, customer_of_order: Option<String>) -> Vec<Notice> {
    let d = &event.data;
    let kind = kind(&event.ty);
    let order = d["orderId"].as_str().unwrap_or_default().to_owned();
    let customer = d["customerId"].as_str().map(str::to_owned);
    let for_order = |title: String| -> Vec<Notice> {
        customer
            .clone()
            .or(customer_of_order.clone())
            .map(|c| Notice {
                customer: c,
                kind: kind.clone(),
                title,
                data: json!({"orderId": order}),
            })
            .into_iter()
            .collect()
    };
    match kind.as_str() {
        "order.placed" => for_order(format!("Order received: {}", money(&d["total"]))),
        "order.paid" => for_order(format!("Payment received: {}", money(&d["total"]))),
        "order.fulfilled" => for_order("Your order is on its way".into()),
        "order.cancelled" => for_order("Your order was cancelled".into()),
        "order.failed" => for_order(format!(
            "Your order could not be completed ({})",
            d["reason"].as_str().unwrap_or("unknown reason")
        )),
        "payment.refunded" => for_order(format!("Refund issued: {}", money(&d["amount"]))),
        "chat.message.posted" => d["offline"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|user| Notice {
                customer: user.to_owned(),
                kind: kind.clone(),
                title: format!(
                    "New message from {}",
                    d["senderId"].as_str().unwrap_or("someone")
                ),
                data: json!({
                    "roomId": d["roomId"], "seq": d["seq"], "preview": d["preview"],
                }),
            })
            .collect(),
        "iot.anomaly.detected" | "iot.anomaly.cleared" => {
            let device = d["deviceId"].as_str().unwrap_or("a device");
            let metric = d["metric"].as_str().unwrap_or("a metric");
            let title = if kind == "iot.anomaly.detected" {
                format!(
                    "{device}: {metric} anomaly ({}, {})",
                    d["kind"].as_str().unwrap_or("unknown"),
                    d["value"]
                )
            } else {
                format!("{device}: {metric} is back to normal")
            };
            d["owner"]
                .as_str()
                .map(|owner| Notice {
                    customer: owner.to_owned(),
                    kind: kind.clone(),
                    title,
                    data: json!({
                        "deviceId": d["deviceId"], "metric": d["metric"],
                        "anomalyId": d["anomalyId"], "anomalyKind": d["kind"],
                    }),
                })
                .into_iter()
                .collect()
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_money() {
        assert_eq!(kind("com.bitvelocity.order.paid.v1"), "order.paid");
        assert_eq!(
            kind("com.bitvelocity.chat.message.posted.v1"),
            "chat.message.posted"
        );
        assert_eq!(
            money(&json!({"amount": 1299, "currency": "EUR"})),
            "12.99 EUR"
        );
    }
}
