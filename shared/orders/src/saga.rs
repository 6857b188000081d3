//! The checkout saga as data: its steps in order, each with the call it
//! makes and a pure function that classifies the callee's answer, and the
//! mapping of a failed step to the problem the checkout answers. The
//! `order` component runs [`CHECKOUT`] with one small runner (logging
//! every step `started`, `done` or `failed`, and moving the order); all
//! that is decided here is pure, so it is unit tested on the host.

use std::time::Duration;

use bv_service::{Problem, ProblemKind};
use serde_json::{json, Value};

use crate::model::{OrderId, SagaState, Status, Step};
use crate::services::{Answer, INVENTORY, PAYMENT};
use crate::store::{Move, Order};

/// A dependency of the saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    /// `inventory.spin.internal`.
    Inventory,
    /// `payment.spin.internal`.
    Payment,
}

impl Dependency {
    /// Its name: its breaker, its retry budget, and the `dependency` of
    /// the problems naming it.
    pub fn name(self) -> &'static str {
        match self {
            Dependency::Inventory => "inventory",
            Dependency::Payment => "payment",
        }
    }
}

/// Why a guarded call has no answer to give.
#[derive(Debug)]
pub enum CallError {
    /// The breaker is open: the call (or its retry) was not sent.
    Open {
        /// When it may let a call through again.
        retry_after: Duration,
        /// Attempts sent before the breaker refused one (0: nothing sent).
        attempts: u32,
    },
    /// Every attempt passed its deadline.
    TimedOut {
        /// Attempts sent.
        attempts: u32,
        /// Each attempt's deadline.
        timeout: Duration,
    },
    /// The last attempt failed without an answer.
    Failed(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Open {
                retry_after,
                attempts,
            } => write!(
                f,
                "circuit open after {attempts} attempts (retry after {} ms)",
                retry_after.as_millis()
            ),
            CallError::TimedOut { attempts, timeout } => write!(
                f,
                "no answer within {} ms ({attempts} attempts)",
                timeout.as_millis()
            ),
            CallError::Failed(e) => f.write_str(e),
        }
    }
}

/// A failed step: what to record and answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The step that failed.
    pub step: Step,
    /// The order's `reason` (stored, and in `order.failed`): one of the
    /// saga's own or, for a decline, the payment service's kind.
    pub reason: String,
    /// The answer's status.
    pub status: u16,
    /// The answer's detail.
    pub detail: String,
    /// Whether a payment call may have reached the payment service (so
    /// there may be a payment to void or refund).
    pub payment_sent: bool,
    /// Set when a circuit breaker refused the call: the dependency, and
    /// when to try again.
    pub circuit_open: Option<(Dependency, Duration)>,
}

/// The reason of a failure because the order was cancelled meanwhile.
pub const ORDER_CANCELLED: &str = "order-cancelled";

impl Failure {
    /// `step` failed with `reason`, answered `status` with `detail`.
    pub fn new(step: Step, reason: &str, status: u16, detail: impl Into<String>) -> Self {
        Self {
            step,
            reason: reason.to_string(),
            status,
            detail: detail.into(),
            payment_sent: step != Step::ReserveStock,
            circuit_open: None,
        }
    }

    /// The order was cancelled (by its customer or the sweeper) while the
    /// saga ran: the saga gives back what it took since.
    pub fn moved_meanwhile(step: Step) -> Self {
        Self::new(
            step,
            ORDER_CANCELLED,
            409,
            "the order was cancelled during checkout",
        )
    }

    /// `service` failed at `step` (an unexpected answer, or no answer
    /// after the retries): `<service>-unavailable`, 503.
    pub fn unavailable(step: Step, service: &str, e: impl std::fmt::Display) -> Self {
        eprintln!("order saga: {}: {e}", step.as_str());
        Self::new(
            step,
            &format!("{service}-unavailable"),
            503,
            format!("the {service} service failed"),
        )
    }

    /// A guarded call to `dependency` that has no answer: refused by its
    /// open circuit breaker (reason `<dependency>-circuit-open`, answered
    /// 503 `dependency-unavailable` at once), or failed and timed out
    /// after its retries (`<dependency>-unavailable`).
    pub fn call_failed(step: Step, dependency: Dependency, e: CallError) -> Self {
        let name = dependency.name();
        let CallError::Open {
            retry_after,
            attempts,
        } = e
        else {
            return Self::unavailable(step, name, e);
        };
        let mut f = Self::new(
            step,
            &format!("{name}-circuit-open"),
            503,
            format!("the {name} service is failing: its circuit breaker is open, so the checkout stopped without waiting for it"),
        );
        f.circuit_open = Some((dependency, retry_after));
        f.payment_sent =
            step == Step::CapturePayment || (step == Step::AuthorizePayment && attempts > 0);
        f
    }

    /// Whether the order was cancelled meanwhile (it then stays
    /// CANCELLED rather than becoming FAILED).
    pub fn order_cancelled(&self) -> bool {
        self.reason == ORDER_CANCELLED
    }

    /// The problem kind to answer: one of a fixed set (also the `reason`
    /// label of `orders{outcome="failed"}`), unlike the callee's reason.
    pub fn kind(&self) -> ProblemKind {
        problem_kind(&self.reason)
    }

    /// The problem the checkout of `order_id` answers.
    pub fn problem(&self, order_id: &OrderId) -> Problem {
        let mut problem = Problem::new(
            self.status,
            self.kind(),
            title(self.status, &self.reason),
            self.detail.clone(),
        )
        .with("orderId", order_id.as_str())
        .with("reason", self.reason.as_str());
        if let Some((dependency, retry_after)) = self.circuit_open {
            // Whole seconds, rounded up: also the answer's `Retry-After`.
            let seconds = retry_after.as_millis().div_ceil(1000).max(1) as u64;
            problem = problem
                .with("dependency", dependency.name())
                .with("retryAfterSeconds", seconds);
        }
        problem
    }
}

/// The problem kind of a failure `reason`: one of a fixed set.
pub fn problem_kind(reason: &str) -> ProblemKind {
    match reason {
        "insufficient-stock" => ProblemKind::InsufficientStock,
        "unknown-product" => ProblemKind::UnknownProduct,
        "card-declined" => ProblemKind::CardDeclined,
        "insufficient-funds" => ProblemKind::InsufficientFunds,
        "card-expired" => ProblemKind::CardExpired,
        "amount-limit" => ProblemKind::AmountLimit,
        "inventory-unavailable" => ProblemKind::InventoryUnavailable,
        "payment-unavailable" => ProblemKind::PaymentUnavailable,
        "inventory-circuit-open" | "payment-circuit-open" => ProblemKind::DependencyUnavailable,
        ORDER_CANCELLED => ProblemKind::OrderCancelled,
        "payment-rejected" => ProblemKind::PaymentRejected,
        _ => ProblemKind::PaymentDeclined,
    }
}

/// The problem title of a failure answered `status` for `reason`.
pub fn title(status: u16, reason: &str) -> &'static str {
    match status {
        402 => "The payment was declined",
        409 if reason == ORDER_CANCELLED => "The order was cancelled",
        409 => "Not enough stock",
        503 => "A dependency is unavailable",
        _ => "The payment was refused",
    }
}

/// How a step's callee answered: what the runner gets back from a
/// guarded call.
pub type Called = Result<Answer, CallError>;

/// What a step does not accept from `dependency`: an unexpected answer is
/// the dependency failing (`<dependency>-unavailable`), no answer is
/// [`Failure::call_failed`].
fn failing(step: Step, dependency: Dependency, called: Called) -> Failure {
    match called {
        Ok(a) => Failure::unavailable(step, dependency.name(), format!("{} {}", a.status, a.body)),
        Err(e) => Failure::call_failed(step, dependency, e),
    }
}

/// The reservation: 200/201 held; 409 or `unknown-product` is the stock's
/// answer (409); anything else is inventory failing.
pub fn reserve_stock(called: Called) -> Result<(), Failure> {
    let step = Step::ReserveStock;
    match called {
        Ok(Answer {
            status: 200 | 201, ..
        }) => Ok(()),
        Ok(a) if a.status == 409 || a.kind() == Some(ProblemKind::UnknownProduct.as_str()) => {
            let reason = if a.status == 409 {
                "insufficient-stock"
            } else {
                "unknown-product"
            };
            let detail = a.body["detail"].as_str().unwrap_or("not enough stock");
            Err(Failure::new(step, reason, 409, detail))
        }
        other => Err(failing(step, Dependency::Inventory, other)),
    }
}

/// The authorization: 200/201 authorized; 402 a decline under the payment
/// service's kind (`card-declined` when it names none); any other 4xx a
/// refused request (422 `payment-rejected`); else payment failing.
pub fn authorize_payment(called: Called) -> Result<(), Failure> {
    let step = Step::AuthorizePayment;
    match called {
        Ok(Answer {
            status: 200 | 201, ..
        }) => Ok(()),
        Ok(a) if a.status == 402 => {
            let reason = a.kind().unwrap_or("card-declined");
            let detail = a.body["detail"].as_str().unwrap_or("declined");
            Err(Failure::new(step, reason, 402, detail))
        }
        Ok(a) if (400..500).contains(&a.status) => {
            eprintln!("order saga: {}: {} {}", step.as_str(), a.status, a.body);
            Err(Failure::new(
                step,
                "payment-rejected",
                422,
                "the payment service refused the payment request",
            ))
        }
        other => Err(failing(step, Dependency::Payment, other)),
    }
}

/// The capture: 200 captured; anything else is payment failing.
pub fn capture_payment(called: Called) -> Result<(), Failure> {
    let step = Step::CapturePayment;
    match called {
        Ok(Answer { status: 200, .. }) => Ok(()),
        other => Err(failing(step, Dependency::Payment, other)),
    }
}

/// Emptying the cart once paid, which cannot fail the checkout: `None`
/// when it was emptied, else why not (the `failed` entry's detail).
pub fn clear_cart(called: Result<Answer, String>) -> Option<String> {
    match called {
        Ok(a) if a.status < 300 => None,
        Ok(a) => Some(format!("{} {}", a.status, a.body)),
        Err(e) => Some(e),
    }
}

/// The call a step makes.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The HTTP method.
    pub method: &'static str,
    /// The URL (service chaining).
    pub url: String,
    /// The JSON body, if any.
    pub body: Option<Value>,
}

/// One step of the checkout up to `PAID`.
pub struct SagaStep {
    /// Which.
    pub step: Step,
    /// Whom it calls.
    pub dependency: Dependency,
    /// The call, for an order and its card token.
    pub call: fn(&Order, &str) -> Call,
    /// Its callee's answer: ok, or the failure.
    pub classify: fn(Called) -> Result<(), Failure>,
    /// The move the order makes once the step is done, if any (the runner
    /// adds the trace); if the order is no longer where the move starts,
    /// it was cancelled meanwhile.
    pub then: Option<fn(&Order) -> Move<'static>>,
}

/// The checkout's steps up to `PAID`, in order.
pub const CHECKOUT: [SagaStep; 3] = [
    SagaStep {
        step: Step::ReserveStock,
        dependency: Dependency::Inventory,
        call: reservation,
        classify: reserve_stock,
        then: Some(confirmed),
    },
    SagaStep {
        step: Step::AuthorizePayment,
        dependency: Dependency::Payment,
        call: authorization,
        classify: authorize_payment,
        then: None,
    },
    SagaStep {
        step: Step::CapturePayment,
        dependency: Dependency::Payment,
        call: capture,
        classify: capture_payment,
        then: Some(paid),
    },
];

/// Reserve the order's lines (reservation id = order id).
fn reservation(order: &Order, _token: &str) -> Call {
    let id = order.id.as_str();
    let lines: Vec<Value> = order
        .items
        .iter()
        .map(|l| json!({ "productId": l.product_id, "quantity": l.quantity }))
        .collect();
    Call {
        method: "POST",
        url: format!("{INVENTORY}/reservations"),
        body: Some(json!({ "reservationId": id, "orderId": id, "items": lines })),
    }
}

/// Authorize the total (payment id = order id).
fn authorization(order: &Order, token: &str) -> Call {
    let id = order.id.as_str();
    Call {
        method: "POST",
        url: format!("{PAYMENT}/authorize"),
        body: Some(json!({
            "paymentId": id, "orderId": id, "amount": order.total, "card": { "token": token }
        })),
    }
}

/// Capture the authorized payment.
fn capture(order: &Order, _token: &str) -> Call {
    Call {
        method: "POST",
        url: format!("{PAYMENT}/{}/capture", order.id),
        body: None,
    }
}

/// A move forward after a step: no reason, the trace added by the runner.
fn forward(
    from: &'static [Status],
    to: Status,
    saga: Option<SagaState>,
    event: (&'static str, Value),
) -> Move<'static> {
    Move {
        from,
        to,
        reason: None,
        saga,
        event,
        trace: None,
    }
}

/// Stock reserved: `PENDING → CONFIRMED` (`order.confirmed`).
fn confirmed(order: &Order) -> Move<'static> {
    let id = order.id.as_str();
    let data = json!({ "orderId": id, "customerId": order.customer, "reservationId": id });
    forward(
        &[Status::Pending],
        Status::Confirmed,
        None,
        ("com.bitvelocity.order.confirmed.v1", data),
    )
}

/// Captured: `CONFIRMED → PAID` (`order.paid`), the saga finished.
fn paid(order: &Order) -> Move<'static> {
    let id = order.id.as_str();
    let data = json!({
        "orderId": id, "customerId": order.customer, "paymentId": id, "total": order.total
    });
    forward(
        &[Status::Confirmed],
        Status::Paid,
        Some(SagaState::Finished),
        ("com.bitvelocity.order.paid.v1", data),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: Value) -> Called {
        Ok(Answer::http(status, body))
    }

    fn problem(kind: &str, detail: &str) -> Value {
        json!({ "type": format!("urn:bitvelocity:problem:{kind}"), "detail": detail })
    }

    fn open(attempts: u32) -> Called {
        Err(CallError::Open {
            retry_after: Duration::from_millis(2_500),
            attempts,
        })
    }

    fn timed_out() -> Called {
        Err(CallError::TimedOut {
            attempts: 3,
            timeout: Duration::from_secs(3),
        })
    }

    fn failed(f: Result<(), Failure>) -> Failure {
        f.expect_err("the step fails")
    }

    #[test]
    fn reserve_stock_holds_on_200_and_201() {
        assert_eq!(reserve_stock(answer(200, Value::Null)), Ok(()));
        assert_eq!(reserve_stock(answer(201, json!({}))), Ok(()));
    }

    #[test]
    fn reserve_stock_409_is_insufficient_stock() {
        let f = failed(reserve_stock(answer(
            409,
            problem("insufficient-stock", "not enough of p-1"),
        )));
        assert_eq!(f.step, Step::ReserveStock);
        assert_eq!((f.reason.as_str(), f.status), ("insufficient-stock", 409));
        assert_eq!(f.detail, "not enough of p-1");
        assert!(!f.payment_sent);
        assert_eq!(f.kind(), ProblemKind::InsufficientStock);
        let bare = failed(reserve_stock(answer(409, Value::Null)));
        assert_eq!(bare.detail, "not enough stock");
    }

    #[test]
    fn reserve_stock_unknown_product_is_answered_409() {
        let f = failed(reserve_stock(answer(
            422,
            problem("unknown-product", "no stock record for p-9"),
        )));
        assert_eq!((f.reason.as_str(), f.status), ("unknown-product", 409));
        assert_eq!(f.detail, "no stock record for p-9");
        assert_eq!(f.kind(), ProblemKind::UnknownProduct);
    }

    #[test]
    fn reserve_stock_other_answers_are_inventory_unavailable() {
        for status in [500, 422, 404, 429] {
            let f = failed(reserve_stock(answer(status, Value::Null)));
            assert_eq!(
                (f.reason.as_str(), f.status),
                ("inventory-unavailable", 503)
            );
            assert_eq!(f.detail, "the inventory service failed");
            assert!(!f.payment_sent);
            assert_eq!(f.circuit_open, None);
        }
        let f = failed(reserve_stock(timed_out()));
        assert_eq!(f.reason, "inventory-unavailable");
        let f = failed(reserve_stock(Err(CallError::Failed("refused".into()))));
        assert_eq!(f.reason, "inventory-unavailable");
    }

    #[test]
    fn reserve_stock_circuit_open_sends_no_payment() {
        for attempts in [0, 2] {
            let f = failed(reserve_stock(open(attempts)));
            assert_eq!(
                (f.reason.as_str(), f.status),
                ("inventory-circuit-open", 503)
            );
            assert_eq!(
                f.circuit_open,
                Some((Dependency::Inventory, Duration::from_millis(2_500)))
            );
            assert!(!f.payment_sent);
            assert_eq!(f.kind(), ProblemKind::DependencyUnavailable);
        }
    }

    #[test]
    fn authorize_payment_authorizes_on_200_and_201() {
        assert_eq!(authorize_payment(answer(200, Value::Null)), Ok(()));
        assert_eq!(authorize_payment(answer(201, Value::Null)), Ok(()));
    }

    #[test]
    fn authorize_payment_402_is_the_decline_of_its_kind() {
        let f = failed(authorize_payment(answer(
            402,
            problem("insufficient-funds", "payment `x` was declined"),
        )));
        assert_eq!(f.step, Step::AuthorizePayment);
        assert_eq!((f.reason.as_str(), f.status), ("insufficient-funds", 402));
        assert_eq!(f.detail, "payment `x` was declined");
        assert!(f.payment_sent);
        assert_eq!(f.kind(), ProblemKind::InsufficientFunds);
        // No kind: a plain decline.
        let f = failed(authorize_payment(answer(402, Value::Null)));
        assert_eq!(
            (f.reason.as_str(), f.detail.as_str()),
            ("card-declined", "declined")
        );
        // A kind the order service does not know stays the reason.
        let f = failed(authorize_payment(answer(402, problem("stolen-card", "no"))));
        assert_eq!(f.reason, "stolen-card");
        assert_eq!(f.kind(), ProblemKind::PaymentDeclined);
    }

    #[test]
    fn authorize_payment_other_4xx_is_payment_rejected() {
        for status in [400, 404, 409, 422, 429] {
            let f = failed(authorize_payment(answer(
                status,
                problem("invalid-field", "x"),
            )));
            assert_eq!((f.reason.as_str(), f.status), ("payment-rejected", 422));
            assert_eq!(f.detail, "the payment service refused the payment request");
            assert_eq!(f.kind(), ProblemKind::PaymentRejected);
        }
    }

    #[test]
    fn authorize_payment_5xx_is_payment_unavailable() {
        for called in [
            answer(500, Value::Null),
            answer(503, Value::Null),
            timed_out(),
        ] {
            let f = failed(authorize_payment(called));
            assert_eq!((f.reason.as_str(), f.status), ("payment-unavailable", 503));
            assert_eq!(f.detail, "the payment service failed");
            assert!(f.payment_sent);
            assert_eq!(f.kind(), ProblemKind::PaymentUnavailable);
        }
    }

    #[test]
    fn authorize_payment_circuit_open_sent_a_payment_only_after_an_attempt() {
        let f = failed(authorize_payment(open(0)));
        assert_eq!((f.reason.as_str(), f.status), ("payment-circuit-open", 503));
        assert!(!f.payment_sent, "nothing reached the payment service");
        let f = failed(authorize_payment(open(1)));
        assert!(f.payment_sent, "an attempt may have authorized");
        assert_eq!(f.circuit_open.map(|(d, _)| d), Some(Dependency::Payment));
    }

    #[test]
    fn capture_payment_captures_on_200_only() {
        assert_eq!(capture_payment(answer(200, Value::Null)), Ok(()));
        for status in [201, 409, 500] {
            let f = failed(capture_payment(answer(status, Value::Null)));
            assert_eq!(f.step, Step::CapturePayment);
            assert_eq!((f.reason.as_str(), f.status), ("payment-unavailable", 503));
            assert!(f.payment_sent);
        }
        let f = failed(capture_payment(open(0)));
        assert_eq!(f.reason, "payment-circuit-open");
        assert!(f.payment_sent, "the payment was authorized before");
    }

    #[test]
    fn clear_cart_fails_with_the_answer_or_the_error() {
        assert_eq!(clear_cart(Ok(Answer::http(204, Value::Null))), None);
        assert_eq!(
            clear_cart(Ok(Answer::http(500, json!({"a": 1})))).as_deref(),
            Some(r#"500 {"a":1}"#)
        );
        assert_eq!(clear_cart(Err("gone".into())).as_deref(), Some("gone"));
    }

    #[test]
    fn a_cancelled_order_is_its_own_failure() {
        let f = Failure::moved_meanwhile(Step::CapturePayment);
        assert!(f.order_cancelled());
        assert_eq!((f.status, f.kind()), (409, ProblemKind::OrderCancelled));
        assert_eq!(title(f.status, &f.reason), "The order was cancelled");
        assert!(f.payment_sent);
    }

    #[test]
    fn every_failure_reason_has_its_kind_and_title() {
        let table = [
            (
                "insufficient-stock",
                409,
                "insufficient-stock",
                "Not enough stock",
            ),
            (
                "unknown-product",
                409,
                "unknown-product",
                "Not enough stock",
            ),
            (
                "card-declined",
                402,
                "card-declined",
                "The payment was declined",
            ),
            (
                "insufficient-funds",
                402,
                "insufficient-funds",
                "The payment was declined",
            ),
            (
                "card-expired",
                402,
                "card-expired",
                "The payment was declined",
            ),
            (
                "amount-limit",
                402,
                "amount-limit",
                "The payment was declined",
            ),
            (
                "something-new",
                402,
                "payment-declined",
                "The payment was declined",
            ),
            (
                "payment-rejected",
                422,
                "payment-rejected",
                "The payment was refused",
            ),
            (
                "inventory-unavailable",
                503,
                "inventory-unavailable",
                "A dependency is unavailable",
            ),
            (
                "payment-unavailable",
                503,
                "payment-unavailable",
                "A dependency is unavailable",
            ),
            (
                "inventory-circuit-open",
                503,
                "dependency-unavailable",
                "A dependency is unavailable",
            ),
            (
                "payment-circuit-open",
                503,
                "dependency-unavailable",
                "A dependency is unavailable",
            ),
            (
                "order-cancelled",
                409,
                "order-cancelled",
                "The order was cancelled",
            ),
        ];
        for (reason, status, kind, expected_title) in table {
            assert_eq!(problem_kind(reason).as_str(), kind, "{reason}");
            assert_eq!(title(status, reason), expected_title, "{reason}");
        }
    }

    #[test]
    fn the_problem_names_the_order_and_an_open_circuit() {
        let id = OrderId::from("o-1");
        let p = failed(authorize_payment(open(0))).problem(&id);
        assert_eq!(
            (p.status, p.kind),
            (503, ProblemKind::DependencyUnavailable)
        );
        assert_eq!(p.title, "A dependency is unavailable");
        assert_eq!(p.extensions["orderId"], "o-1");
        assert_eq!(p.extensions["reason"], "payment-circuit-open");
        assert_eq!(p.extensions["dependency"], "payment");
        assert_eq!(p.extensions["retryAfterSeconds"], 3, "2.5 s rounded up");
        let p = failed(reserve_stock(answer(409, Value::Null))).problem(&id);
        assert_eq!(
            p.body().to_string(),
            r#"{"detail":"not enough stock","orderId":"o-1","reason":"insufficient-stock","status":409,"title":"Not enough stock","type":"urn:bitvelocity:problem:insufficient-stock"}"#
        );
    }

    fn order() -> Order {
        let eur = |amount| {
            bv_service::Money::new(amount, bv_service::Currency::parse("EUR").unwrap()).unwrap()
        };
        Order {
            id: OrderId::from("o-1"),
            customer: crate::model::CustomerId::from("c-1"),
            status: Status::Pending,
            reason: None,
            items: vec![crate::model::OrderLine {
                product_id: "p-1".into(),
                sku: "SKU-1".into(),
                name: "Mug".into(),
                unit_price: eur(1299),
                quantity: 2,
                line_total: eur(2598),
            }],
            total: eur(2598),
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    #[test]
    fn each_step_calls_its_dependency_with_the_order_id() {
        let order = order();
        let calls: Vec<Call> = CHECKOUT
            .iter()
            .map(|s| (s.call)(&order, "tok_ok"))
            .collect();
        assert_eq!(calls[0].url, format!("{INVENTORY}/reservations"));
        assert_eq!(
            calls[0].body,
            Some(json!({
                "reservationId": "o-1", "orderId": "o-1",
                "items": [{ "productId": "p-1", "quantity": 2 }]
            }))
        );
        assert_eq!(calls[1].url, format!("{PAYMENT}/authorize"));
        assert_eq!(
            calls[1].body,
            Some(json!({
                "paymentId": "o-1", "orderId": "o-1",
                "amount": { "amount": 2598, "currency": "EUR" },
                "card": { "token": "tok_ok" }
            }))
        );
        assert_eq!(
            (calls[2].url.as_str(), &calls[2].body),
            (format!("{PAYMENT}/o-1/capture").as_str(), &None)
        );
        assert!(calls.iter().all(|c| c.method == "POST"));
    }

    #[test]
    fn reserving_confirms_and_capturing_pays() {
        let order = order();
        let moves: Vec<Option<Move>> = CHECKOUT
            .iter()
            .map(|s| s.then.map(|then| then(&order)))
            .collect();
        let confirmed = moves[0].as_ref().expect("reserving moves the order");
        assert_eq!(
            (confirmed.from, confirmed.to),
            (&[Status::Pending][..], Status::Confirmed)
        );
        assert_eq!(confirmed.saga, None);
        assert_eq!(confirmed.event.0, "com.bitvelocity.order.confirmed.v1");
        assert_eq!(
            confirmed.event.1,
            json!({ "orderId": "o-1", "customerId": "c-1", "reservationId": "o-1" })
        );
        assert!(moves[1].is_none(), "authorizing does not move the order");
        let paid = moves[2].as_ref().expect("capturing moves the order");
        assert_eq!(
            (paid.from, paid.to),
            (&[Status::Confirmed][..], Status::Paid)
        );
        assert_eq!(paid.saga, Some(SagaState::Finished));
        assert_eq!(paid.event.0, "com.bitvelocity.order.paid.v1");
        assert_eq!(paid.event.1["total"]["amount"], 2598);
        assert_eq!(paid.event.1["paymentId"], "o-1");
    }

    #[test]
    fn the_checkout_runs_its_steps_in_order() {
        let steps: Vec<Step> = CHECKOUT.iter().map(|s| s.step).collect();
        assert_eq!(
            steps,
            [
                Step::ReserveStock,
                Step::AuthorizePayment,
                Step::CapturePayment
            ]
        );
        let deps: Vec<Dependency> = CHECKOUT.iter().map(|s| s.dependency).collect();
        assert_eq!(
            deps,
            [
                Dependency::Inventory,
                Dependency::Payment,
                Dependency::Payment
            ]
        );
    }
}
