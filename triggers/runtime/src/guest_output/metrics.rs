//! The application's business metrics: what components report with metric
//! lines on stdout, served on the admin `/metrics` as `bv_app_<name>` with a
//! `component` label.
//!
//! Guests choose names and label values, so everything is bounded: at most
//! [`MAX_METRICS`] names per application and [`MAX_SERIES`] label sets per
//! name; what goes past a bound is dropped with one warning.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;

use super::line::{Kind, MetricLine};

/// Metric names one application may create.
pub const MAX_METRICS: usize = 200;

/// Label sets (series) one metric may have, over all components.
pub const MAX_SERIES: usize = 100;

/// Distinct warnings remembered (so each is logged once).
const MAX_WARNINGS: usize = 1000;

/// Histogram buckets, in seconds: from a fast lookup to a slow saga.
const BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

const HELP: &str = "Reported by the application's components (metric lines on stdout).";

/// `component` first, then the line's labels (sorted by name).
type Labels = Vec<(String, String)>;

enum Series {
    Counter(Counter),
    Gauge(Gauge<f64, std::sync::atomic::AtomicU64>),
    Histogram(Histogram),
}

impl Series {
    fn new(kind: Kind) -> Self {
        match kind {
            Kind::Counter => Series::Counter(Counter::default()),
            Kind::Gauge => Series::Gauge(Gauge::default()),
            Kind::Histogram => Series::Histogram(Histogram::new(BUCKETS)),
        }
    }

    fn record(&self, value: f64) {
        match self {
            Series::Counter(c) => {
                c.inc_by(value as u64);
            }
            Series::Gauge(g) => {
                g.set(value);
            }
            Series::Histogram(h) => h.observe(value),
        }
    }

    fn encode(&self, encoder: prometheus_client::encoding::MetricEncoder) -> std::fmt::Result {
        match self {
            Series::Counter(c) => c.encode(encoder),
            Series::Gauge(g) => g.encode(encoder),
            Series::Histogram(h) => h.encode(encoder),
        }
    }
}

struct Metric {
    kind: Kind,
    series: BTreeMap<Labels, Series>,
}

#[derive(Default)]
struct Inner {
    metrics: BTreeMap<String, Metric>,
    warned: HashSet<String>,
}

/// The business metrics of one application (a Prometheus collector).
#[derive(Default)]
pub struct AppMetrics {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for AppMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppMetrics")
    }
}

impl AppMetrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `line`, reported by `component`. A line that cannot be counted
    /// (a name used with another kind, a bound reached) gives a warning to
    /// log, the first time only.
    pub fn record(&self, component: &str, line: MetricLine) -> Option<String> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let full_name = |name: &str, kind: Kind| match kind {
            Kind::Counter => format!("bv_app_{name}_total"),
            _ => format!("bv_app_{name}"),
        };
        if !inner.metrics.contains_key(&line.name) && inner.metrics.len() >= MAX_METRICS {
            return warn_once(
                &mut inner.warned,
                format!("count:{}", line.name),
                format!(
                    "metric `{}` dropped: the application already has {MAX_METRICS} metrics",
                    full_name(&line.name, line.kind)
                ),
            );
        }
        let metric = inner
            .metrics
            .entry(line.name.clone())
            .or_insert_with(|| Metric {
                kind: line.kind,
                series: BTreeMap::new(),
            });
        if metric.kind != line.kind {
            let message = format!(
                "metric `{}` is a {}; a {} line with that name was dropped",
                full_name(&line.name, metric.kind),
                metric.kind.as_str(),
                line.kind.as_str()
            );
            return warn_once(&mut inner.warned, format!("kind:{}", line.name), message);
        }
        let mut labels = Vec::with_capacity(line.labels.len() + 1);
        labels.push(("component".to_string(), component.to_string()));
        labels.extend(line.labels);
        if let Some(series) = metric.series.get(&labels) {
            series.record(line.value);
            return None;
        }
        if metric.series.len() >= MAX_SERIES {
            let message = format!(
                "metric `{}` has {MAX_SERIES} label sets already; lines with new label values are dropped (keep label values to a small fixed set)",
                full_name(&line.name, metric.kind)
            );
            return warn_once(&mut inner.warned, format!("series:{}", line.name), message);
        }
        let series = Series::new(line.kind);
        series.record(line.value);
        metric.series.insert(labels, series);
        None
    }

    /// `message` the first time `key` is seen (a bounded number of keys).
    pub fn warn_once(&self, key: String, message: String) -> Option<String> {
        warn_once(&mut self.lock().warned, key, message)
    }
}

fn warn_once(warned: &mut HashSet<String>, key: String, message: String) -> Option<String> {
    if warned.len() >= MAX_WARNINGS || !warned.insert(key) {
        return None;
    }
    Some(message)
}

impl Collector for AppMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let inner = self.lock();
        for (name, metric) in &inner.metrics {
            let name = format!("app_{name}");
            let kind = match metric.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
                Kind::Histogram => MetricType::Histogram,
            };
            let mut family = encoder.encode_descriptor(&name, HELP, None, kind)?;
            for (labels, series) in &metric.series {
                series.encode(family.encode_family(labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;
    use std::sync::Arc;

    fn line(name: &str, kind: Kind, value: f64, labels: &[(&str, &str)]) -> MetricLine {
        MetricLine {
            name: name.into(),
            kind,
            value,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn exposition(metrics: &Arc<AppMetrics>) -> String {
        let mut registry = Registry::with_prefix("bv");
        registry.register_collector(Box::new(metrics.clone()));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn counters_gauges_and_histograms_are_exposed_with_the_component() {
        let m = Arc::new(AppMetrics::default());
        let paid = [("outcome", "paid")];
        assert_eq!(
            m.record("order", line("orders", Kind::Counter, 2.0, &paid)),
            None
        );
        assert_eq!(
            m.record("order", line("orders", Kind::Counter, 1.0, &paid)),
            None
        );
        assert_eq!(
            m.record(
                "order",
                line("orders", Kind::Counter, 1.0, &[("outcome", "failed")])
            ),
            None
        );
        m.record("cart", line("queue_depth", Kind::Gauge, 5.0, &[]));
        m.record("cart", line("queue_depth", Kind::Gauge, 3.5, &[]));
        m.record("order", line("saga_seconds", Kind::Histogram, 0.3, &[]));
        let text = exposition(&m);
        for expected in [
            "# TYPE bv_app_orders counter\n",
            "bv_app_orders_total{component=\"order\",outcome=\"failed\"} 1\n",
            "bv_app_orders_total{component=\"order\",outcome=\"paid\"} 3\n",
            "# TYPE bv_app_queue_depth gauge\n",
            "bv_app_queue_depth{component=\"cart\"} 3.5\n",
            "bv_app_saga_seconds_bucket{le=\"0.5\",component=\"order\"} 1\n",
            "bv_app_saga_seconds_bucket{le=\"0.25\",component=\"order\"} 0\n",
            "bv_app_saga_seconds_count{component=\"order\"} 1\n",
        ] {
            assert!(text.contains(expected), "{expected}missing from:\n{text}");
        }
    }

    #[test]
    fn another_kind_under_a_name_is_dropped_with_one_warning() {
        let m = AppMetrics::default();
        m.record("a", line("x", Kind::Counter, 1.0, &[]));
        let warning = m.record("a", line("x", Kind::Gauge, 1.0, &[])).unwrap();
        assert!(
            warning.contains("`bv_app_x_total` is a counter"),
            "{warning}"
        );
        assert_eq!(m.record("a", line("x", Kind::Gauge, 1.0, &[])), None);
    }

    #[test]
    fn label_sets_are_capped_per_metric() {
        let m = Arc::new(AppMetrics::default());
        for i in 0..MAX_SERIES {
            let id = i.to_string();
            assert_eq!(
                m.record("c", line("hits", Kind::Counter, 1.0, &[("id", &id)])),
                None
            );
        }
        let warning = m
            .record("c", line("hits", Kind::Counter, 1.0, &[("id", "new")]))
            .unwrap();
        assert!(warning.contains("100 label sets"), "{warning}");
        assert_eq!(
            m.record("c", line("hits", Kind::Counter, 1.0, &[("id", "new2")])),
            None
        );
        // Known series still count.
        m.record("c", line("hits", Kind::Counter, 4.0, &[("id", "7")]));
        let text = exposition(&m);
        assert!(
            text.contains("bv_app_hits_total{component=\"c\",id=\"7\"} 5\n"),
            "{text}"
        );
        assert!(!text.contains("new"));
    }

    #[test]
    fn metric_names_are_capped_per_application() {
        let m = AppMetrics::default();
        for i in 0..MAX_METRICS {
            assert_eq!(
                m.record("c", line(&format!("m{i}"), Kind::Counter, 1.0, &[])),
                None
            );
        }
        assert!(m
            .record("c", line("one_more", Kind::Counter, 1.0, &[]))
            .is_some());
        assert!(m
            .record("c", line("one_more", Kind::Counter, 1.0, &[]))
            .is_none());
        assert!(m.record("c", line("m3", Kind::Counter, 1.0, &[])).is_none());
    }
}
