//! The bridge's Prometheus metrics, served on its admin listener's
//! `/metrics` (prefix `bv_kafka_bridge_`, in the style of `bv`'s own).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A topic.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    /// The topic.
    pub topic: String,
}

/// A consumed record's fate.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InLabels {
    /// The topic read.
    pub topic: String,
    /// `written`, `duplicate` or `dead_letter`.
    pub outcome: &'static str,
}

/// A failure, by the half that met it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `out`, `in` or `cdc`.
    pub direction: &'static str,
}

/// Every figure of the bridge.
#[derive(Default)]
pub struct Metrics {
    /// Outbox events the broker acknowledged, by topic.
    pub produced: Family<TopicLabels, Counter>,
    /// Records read, by topic and fate.
    pub consumed: Family<InLabels, Counter>,
    /// Failed attempts (broker or database unreachable, a refused
    /// produce); the work is retried, never dropped.
    pub errors: Family<ErrorLabels, Counter>,
    /// Events in the outbox after the outbound position that it takes.
    pub out_lag: Gauge,
    /// WAL bytes the change data capture slot holds back (written since
    /// its position).
    pub cdc_lag: Gauge,
}

impl Metrics {
    /// Registers every metric under `bv_kafka_bridge_`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("bv_kafka_bridge");
        r.register(
            "produced_events",
            "Outbox events produced to Kafka and acknowledged by the broker",
            self.produced.clone(),
        );
        r.register(
            "consumed_records",
            "Kafka records taken into the outbox (written or duplicate) or dead-lettered",
            self.consumed.clone(),
        );
        r.register(
            "errors",
            "Failed attempts, retried (broker or database unreachable)",
            self.errors.clone(),
        );
        r.register(
            "out_lag_events",
            "Outbox events the outbound half has yet to produce",
            self.out_lag.clone(),
        );
        r.register(
            "cdc_lag_bytes",
            "WAL bytes written since the change data capture slot's position",
            self.cdc_lag.clone(),
        );
    }

    /// Counts a failure of `direction`.
    pub fn error(&self, direction: &'static str) {
        self.errors.get_or_create(&ErrorLabels { direction }).inc();
    }
}
