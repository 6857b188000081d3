//! Metrics of the WebSocket connections, on the admin listener's `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComponentLabels {
    component: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabels {
    component: String,
    /// `in` (from clients) or `out` (to clients).
    direction: &'static str,
}

/// The WebSocket metrics of one application.
#[derive(Default)]
pub struct Metrics {
    open: Family<ComponentLabels, Gauge>,
    messages: Family<MessageLabels, Counter>,
    slow: Family<ComponentLabels, Counter>,
}

impl Metrics {
    /// Registers the metrics with `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "bv_websocket_connections",
            "WebSocket connections open in this process, by component",
            metrics.open.clone(),
        );
        registry.register(
            "bv_websocket_messages",
            "WebSocket messages from clients (in) and queued for them (out), by component",
            metrics.messages.clone(),
        );
        registry.register(
            "bv_websocket_slow_clients_closed",
            "WebSocket connections closed because messages for them piled up, by component",
            metrics.slow.clone(),
        );
        metrics
    }

    fn component(component: &str) -> ComponentLabels {
        ComponentLabels {
            component: component.to_string(),
        }
    }

    pub(crate) fn opened(&self, component: &str) {
        self.open.get_or_create(&Self::component(component)).inc();
    }

    pub(crate) fn closed(&self, component: &str) {
        self.open.get_or_create(&Self::component(component)).dec();
    }

    pub(crate) fn message(&self, component: &str, direction: &'static str) {
        self.messages
            .get_or_create(&MessageLabels {
                component: component.to_string(),
                direction,
            })
            .inc();
    }

    pub(crate) fn slow(&self, component: &str) {
        self.slow.get_or_create(&Self::component(component)).inc();
    }
}
