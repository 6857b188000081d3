//! Prometheus metrics of the HTTP trigger and the instances behind it.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub component: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    pub component: String,
    pub route: String,
}

/// The exemplar of a latency observation: the trace of the request, so a
/// slow bucket leads to a trace that landed in it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TraceLabels {
    pub trace_id: String,
}

impl TraceLabels {
    /// The trace of the current span, when it is sampled.
    pub(crate) fn current() -> Option<Self> {
        bv_telemetry::sampled_trace_id(&tracing::Span::current()).map(|trace_id| Self { trace_id })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ComponentLabels {
    pub component: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RejectionLabels {
    pub component: String,
    /// `concurrency`, `instances` (no free instance slot), `timeout` or `memory`.
    pub limit: &'static str,
}

/// A gRPC call's labels: its component, method (`/package.Service/Method`;
/// `unknown` for a method the component does not have) and status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct GrpcLabels {
    pub component: String,
    pub method: String,
    pub code: &'static str,
}

/// Every metric the HTTP trigger exports on the admin listener's `/metrics`.
pub struct Metrics {
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) duration: Family<RouteLabels, HistogramWithExemplars<TraceLabels>>,
    pub(crate) instantiation: Family<ComponentLabels, Histogram>,
    pub(crate) traps: Family<ComponentLabels, Counter>,
    pub(crate) rejections: Family<RejectionLabels, Counter>,
    pub(crate) in_flight: Family<ComponentLabels, Gauge>,
    pub(crate) grpc_handled: Family<GrpcLabels, Counter>,
}

fn latency_histogram() -> HistogramWithExemplars<TraceLabels> {
    // 0.5 ms .. 10 s: the SLOs are stated in tens and hundreds of milliseconds;
    // 0.3 s is the latency SLO's threshold (infra/observability/sli-targets.yaml),
    // so the SLI is an exact bucket, not the nearest one below.
    HistogramWithExemplars::new(
        [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.3, 0.5, 1.0, 2.5, 5.0,
            10.0,
        ]
        .into_iter(),
    )
}

fn instantiation_histogram() -> Histogram {
    // 5 µs .. 50 ms: instantiation from the pool is tens of microseconds.
    Histogram::new([
        0.000005, 0.00001, 0.00002, 0.00003, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005, 0.05,
    ])
}

impl Metrics {
    /// Creates the HTTP trigger's metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let duration =
            Family::<RouteLabels, HistogramWithExemplars<TraceLabels>>::new_with_constructor(
                latency_histogram as fn() -> HistogramWithExemplars<TraceLabels>,
            );
        let instantiation = Family::<ComponentLabels, Histogram>::new_with_constructor(
            instantiation_histogram as fn() -> Histogram,
        );
        let traps = Family::<ComponentLabels, Counter>::default();
        let rejections = Family::<RejectionLabels, Counter>::default();
        let in_flight = Family::<ComponentLabels, Gauge>::default();
        let grpc_handled = Family::<GrpcLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by component, route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from request to response headers, by component and route",
            duration.clone(),
        );
        registry.register(
            "instantiation_duration_seconds",
            "Time to instantiate a component from its pre-instance",
            instantiation.clone(),
        );
        registry.register(
            "instance_traps",
            "Instances that trapped or panicked",
            traps.clone(),
        );
        registry.register(
            "limit_rejections",
            "Requests refused or cut short by a limit (concurrency, instances, timeout, memory)",
            rejections.clone(),
        );
        registry.register(
            "http_requests_in_flight",
            "Requests being handled, by component",
            in_flight.clone(),
        );
        registry.register(
            "grpc_server_handled",
            "gRPC calls finished, by component, method and status code",
            grpc_handled.clone(),
        );
        Self {
            requests,
            duration,
            instantiation,
            traps,
            rejections,
            in_flight,
            grpc_handled,
        }
    }
}

/// One route's metrics, resolved on its first answer: later answers touch
/// atomics, not the families' label maps (no label strings built, hashed or
/// compared per request). A series appears on `/metrics` once it has a value,
/// as before.
pub(crate) struct RouteMetrics {
    labels: RouteLabels,
    duration: std::sync::OnceLock<HistogramWithExemplars<TraceLabels>>,
    /// The `http_requests` counter of each status answered so far.
    by_status: std::sync::RwLock<Vec<(u16, Counter)>>,
}

impl RouteMetrics {
    pub(crate) fn new(component: &str, route: &str) -> Self {
        let labels = RouteLabels {
            component: component.to_string(),
            route: route.to_string(),
        };
        Self {
            labels,
            duration: Default::default(),
            by_status: Default::default(),
        }
    }

    /// Counts one answer with `status`, `elapsed` after the request came.
    pub(crate) fn record(&self, metrics: &Metrics, status: u16, elapsed: std::time::Duration) {
        self.counter(metrics, status).inc();
        self.duration
            .get_or_init(|| metrics.duration.get_or_create(&self.labels).clone())
            .observe(elapsed.as_secs_f64(), TraceLabels::current(), None);
    }

    fn counter(&self, metrics: &Metrics, status: u16) -> Counter {
        let known = self.by_status.read().unwrap_or_else(|p| p.into_inner());
        if let Some((_, counter)) = known.iter().find(|(s, _)| *s == status) {
            return counter.clone();
        }
        drop(known);
        let counter = metrics
            .requests
            .get_or_create(&RequestLabels {
                component: self.labels.component.clone(),
                route: self.labels.route.clone(),
                status,
            })
            .clone();
        let mut known = self.by_status.write().unwrap_or_else(|p| p.into_inner());
        if !known.iter().any(|(s, _)| *s == status) {
            known.push((status, counter.clone()));
        }
        counter
    }
}

impl Metrics {
    pub(crate) fn component(id: &str) -> ComponentLabels {
        ComponentLabels {
            component: id.to_string(),
        }
    }
}
