//! The trigger's figures on the admin `/metrics`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Deliveries, dead letters, fan-out drops and lag, by subscription.
#[derive(Default)]
pub struct Metrics {
    deliveries: Family<Labels, Counter>,
    dead_letters: Family<Labels, Counter>,
    fanout_dropped: Family<Labels, Counter>,
    lag: Family<Labels, Gauge>,
    disconnects: Counter,
}

impl Metrics {
    /// Registers the figures in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "events_deliveries",
            "Event delivery attempts, by subscription and outcome (ok, error, rejected, trap, timeout)",
            m.deliveries.clone(),
        );
        registry.register(
            "events_dead_letters",
            "Events parked as dead letters, by subscription",
            m.dead_letters.clone(),
        );
        registry.register(
            "events_fanout_dropped",
            "Events a best-effort fan-out gave up on, by subscription",
            m.fanout_dropped.clone(),
        );
        registry.register(
            "events_lag",
            "Events in the outbox a subscription has not yet passed",
            m.lag.clone(),
        );
        registry.register(
            "events_subscriber_disconnects",
            "Postgres trigger connections that were lost",
            m.disconnects.clone(),
        );
        m
    }

    /// Counts one delivery attempt.
    pub fn delivery(&self, subscription: &str, outcome: &'static str) {
        self.deliveries
            .get_or_create(&vec![
                ("subscription", subscription.to_string()),
                ("outcome", outcome.to_string()),
            ])
            .inc();
    }

    /// Delivery attempts of `subscription` that ended with `outcome`.
    pub fn deliveries(&self, subscription: &str, outcome: &'static str) -> u64 {
        self.deliveries
            .get_or_create(&vec![
                ("subscription", subscription.to_string()),
                ("outcome", outcome.to_string()),
            ])
            .get()
    }

    /// Counts one dead letter.
    pub fn dead_lettered(&self, subscription: &str) {
        self.dead_letters
            .get_or_create(&vec![("subscription", subscription.to_string())])
            .inc();
    }

    /// Counts one event a fan-out dropped.
    pub fn fanout_dropped(&self, subscription: &str) {
        self.fanout_dropped
            .get_or_create(&vec![("subscription", subscription.to_string())])
            .inc();
    }

    /// Sets the lag of `subscription`.
    pub fn set_lag(&self, subscription: &str, lag: i64) {
        self.lag
            .get_or_create(&vec![("subscription", subscription.to_string())])
            .set(lag);
    }

    /// Counts a lost connection.
    pub fn disconnected(&self) {
        self.disconnects.inc();
    }
}
