//! Metrics over OTLP: the same figures `/metrics` serves, pushed to the
//! collector every `OTEL_METRIC_EXPORT_INTERVAL` milliseconds.
//!
//! `bv`'s metrics live in one `prometheus-client` registry (the source of
//! `/metrics`); rather than keeping a second set of instruments in step, the
//! pusher reads the registry's own OpenMetrics text and maps each family to
//! its OTLP counterpart: counters to cumulative monotonic sums, gauges to
//! gauges, histograms to cumulative explicit-bucket histograms.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

/// The kind of a metric family, from its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
    Other,
}

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// One family: its `# TYPE`/`# HELP` and sample lines.
#[derive(Debug, Clone, PartialEq)]
struct Family {
    name: String,
    help: String,
    unit: String,
    kind: Kind,
    samples: Vec<Sample>,
}

/// Reads the OpenMetrics text `prometheus-client` writes. Exemplars and
/// timestamps after a sample are ignored; a line that does not parse is
/// skipped (the text comes from our own registry, so that would be a bug
/// worth a missing point, not a failed export).
fn parse(text: &str) -> Vec<Family> {
    let mut families: Vec<Family> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let kind = match kind {
                "counter" => Kind::Counter,
                "gauge" => Kind::Gauge,
                "histogram" => Kind::Histogram,
                _ => Kind::Other,
            };
            match families.last_mut() {
                Some(f) if f.name == name => f.kind = kind,
                _ => families.push(Family {
                    name: name.to_string(),
                    help: String::new(),
                    unit: String::new(),
                    kind,
                    samples: Vec::new(),
                }),
            }
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            match families.last_mut() {
                Some(f) if f.name == name => f.help = help.to_string(),
                _ => families.push(Family {
                    name: name.to_string(),
                    help: help.to_string(),
                    unit: String::new(),
                    kind: Kind::Other,
                    samples: Vec::new(),
                }),
            }
        } else if let Some(rest) = line.strip_prefix("# UNIT ") {
            let (name, unit) = rest.split_once(' ').unwrap_or((rest, ""));
            if let Some(f) = families.last_mut().filter(|f| f.name == name) {
                f.unit = unit.to_string();
            }
        } else if line.starts_with('#') || line.is_empty() {
            continue;
        } else if let (Some(sample), Some(family)) = (parse_sample(line), families.last_mut()) {
            family.samples.push(sample);
        }
    }
    families
}

fn parse_sample(line: &str) -> Option<Sample> {
    // Drop an exemplar (` # {...} value ts`).
    let line = match line.find(" # ") {
        Some(i) => &line[..i],
        None => line,
    };
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let (labels, after) = parse_labels(&line[open + 1..])?;
            (&line[..open], labels, after)
        }
        None => {
            let (name, rest) = line.split_once(' ')?;
            (name, Vec::new(), rest)
        }
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Parses `a="x",b="y"}` (after the opening brace); returns the labels and
/// the text after the closing brace.
fn parse_labels(s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches(',');
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = rest.find('=')?;
        let key = rest[..eq].to_string();
        let mut chars = rest[eq + 1..].char_indices();
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => {
                    end = Some(eq + 1 + i + 1);
                    break;
                }
                c => value.push(c),
            }
        }
        labels.push((key, value));
        rest = &rest[end?..];
    }
}

fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

fn attributes(labels: &[(String, String)]) -> Vec<KeyValue> {
    labels
        .iter()
        .filter(|(k, _)| k != "le")
        .map(|(k, v)| string_kv(k, v))
        .collect()
}

fn number_point(sample: &Sample, start: u64, now: u64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attributes(&sample.labels),
        start_time_unix_nano: start,
        time_unix_nano: now,
        value: Some(number_data_point::Value::AsDouble(sample.value)),
        ..Default::default()
    }
}

/// OpenMetrics buckets are cumulative and end with `+Inf`; OTLP wants the
/// count of each bucket and the finite bounds.
fn histogram_points(family: &Family, start: u64, now: u64) -> Vec<HistogramDataPoint> {
    let bucket = format!("{}_bucket", family.name);
    let sum = format!("{}_sum", family.name);
    let count = format!("{}_count", family.name);
    // (labels without `le`, the point, the cumulative count so far)
    type Series = (Vec<(String, String)>, HistogramDataPoint, u64);
    let mut points: Vec<Series> = Vec::new();
    for sample in &family.samples {
        let key: Vec<(String, String)> = sample
            .labels
            .iter()
            .filter(|(k, _)| k != "le")
            .cloned()
            .collect();
        let index = match points.iter().position(|(k, _, _)| *k == key) {
            Some(i) => i,
            None => {
                points.push((
                    key.clone(),
                    HistogramDataPoint {
                        attributes: attributes(&key),
                        start_time_unix_nano: start,
                        time_unix_nano: now,
                        ..Default::default()
                    },
                    0,
                ));
                points.len() - 1
            }
        };
        let (_, point, cumulative) = &mut points[index];
        if sample.name == bucket {
            let le = sample
                .labels
                .iter()
                .find(|(k, _)| k == "le")
                .map(|(_, v)| v.as_str());
            let total = sample.value as u64;
            point.bucket_counts.push(total.saturating_sub(*cumulative));
            *cumulative = total;
            if let Some(bound) = le
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|b| b.is_finite())
            {
                point.explicit_bounds.push(bound);
            }
        } else if sample.name == sum {
            point.sum = Some(sample.value);
        } else if sample.name == count {
            point.count = sample.value as u64;
        }
    }
    points.into_iter().map(|(_, p, _)| p).collect()
}

/// The OTLP request for one snapshot of the registry's text.
pub fn to_request(
    text: &str,
    resource: &[(String, String)],
    start: SystemTime,
    now: SystemTime,
) -> ExportMetricsServiceRequest {
    let nanos = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
    let (start, now) = (nanos(start), nanos(now));
    let cumulative = AggregationTemporality::Cumulative as i32;
    let metrics = parse(text)
        .into_iter()
        .filter_map(|family| {
            let data = match family.kind {
                Kind::Counter => metric::Data::Sum(Sum {
                    data_points: family
                        .samples
                        .iter()
                        .filter(|s| s.name == format!("{}_total", family.name))
                        .map(|s| number_point(s, start, now))
                        .collect(),
                    aggregation_temporality: cumulative,
                    is_monotonic: true,
                }),
                Kind::Gauge => metric::Data::Gauge(Gauge {
                    data_points: family
                        .samples
                        .iter()
                        .map(|s| number_point(s, start, now))
                        .collect(),
                }),
                Kind::Histogram => metric::Data::Histogram(Histogram {
                    data_points: histogram_points(&family, start, now),
                    aggregation_temporality: cumulative,
                }),
                Kind::Other => return None,
            };
            Some(Metric {
                name: family.name,
                description: family.help,
                unit: family.unit,
                data: Some(data),
                ..Default::default()
            })
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: resource.iter().map(|(k, v)| string_kv(k, v)).collect(),
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "bv".to_string(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// How often metrics are pushed: `OTEL_METRIC_EXPORT_INTERVAL` (ms), else
/// the specification's 60 s.
pub fn export_interval() -> Duration {
    std::env::var("OTEL_METRIC_EXPORT_INTERVAL")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(60))
}

/// Where and how metrics are pushed, from the standard `OTEL_*` variables.
#[derive(Debug, Clone)]
pub struct MetricsPush {
    endpoint: http::Uri,
    json: bool,
    headers: Vec<(String, String)>,
    resource: Vec<(String, String)>,
    interval: Duration,
    started: SystemTime,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// `k1=v1,k2=v2` (OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_HEADERS).
pub fn parse_pairs(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

impl MetricsPush {
    /// The push configuration, or `None` when no OTLP endpoint is set,
    /// `OTEL_SDK_DISABLED=true` or `OTEL_METRICS_EXPORTER=none`.
    pub fn from_env() -> anyhow::Result<Option<Self>> {
        if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || env("OTEL_METRICS_EXPORTER").is_some_and(|v| v == "none")
        {
            return Ok(None);
        }
        let endpoint = match (
            env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"),
            env("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(exact), _) => exact,
            (None, Some(base)) => format!("{}/v1/metrics", base.trim_end_matches('/')),
            (None, None) => return Ok(None),
        };
        let endpoint: http::Uri = endpoint
            .parse()
            .map_err(|e| anyhow::anyhow!("OTLP metrics endpoint `{endpoint}`: {e}"))?;
        if endpoint.scheme_str() != Some("http") {
            anyhow::bail!(
                "OTLP metrics endpoint `{endpoint}`: only http:// is supported \
                 (run the collector next to bv)"
            );
        }
        let protocol = env("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")
            .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .unwrap_or_else(|| "http/protobuf".to_string());
        let json = match protocol.as_str() {
            "http/protobuf" => false,
            "http/json" => true,
            other => anyhow::bail!(
                "OTEL_EXPORTER_OTLP_PROTOCOL `{other}` is not supported for metrics \
                 (use http/protobuf or http/json)"
            ),
        };
        let mut headers = env("OTEL_EXPORTER_OTLP_HEADERS")
            .map(|h| parse_pairs(&h))
            .unwrap_or_default();
        headers.extend(
            env("OTEL_EXPORTER_OTLP_METRICS_HEADERS")
                .map(|h| parse_pairs(&h))
                .unwrap_or_default(),
        );
        let mut resource = env("OTEL_RESOURCE_ATTRIBUTES")
            .map(|r| parse_pairs(&r))
            .unwrap_or_default();
        let service = env("OTEL_SERVICE_NAME").unwrap_or_else(|| "bv".to_string());
        resource.retain(|(k, _)| k != "service.name");
        resource.insert(0, ("service.name".to_string(), service));
        Ok(Some(Self {
            endpoint,
            json,
            headers,
            resource,
            interval: export_interval(),
            started: SystemTime::now(),
        }))
    }

    /// Encodes one snapshot of `text` for the wire.
    fn body(&self, text: &str) -> anyhow::Result<Vec<u8>> {
        let request = to_request(text, &self.resource, self.started, SystemTime::now());
        Ok(if self.json {
            serde_json::to_vec(&request)?
        } else {
            prost::Message::encode_to_vec(&request)
        })
    }

    /// Pushes one snapshot now.
    pub async fn push(&self, text: &str) -> anyhow::Result<()> {
        let body = self.body(text)?;
        let authority = self
            .endpoint
            .authority()
            .ok_or_else(|| anyhow::anyhow!("OTLP endpoint `{}` has no host", self.endpoint))?
            .clone();
        let port = authority.port_u16().unwrap_or(80);
        let stream = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect((authority.host(), port)),
        )
        .await??;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let path = self.endpoint.path_and_query().map_or("/", |p| p.as_str());
        let mut request = http::Request::post(path)
            .header(http::header::HOST, authority.as_str())
            .header(
                http::header::CONTENT_TYPE,
                if self.json {
                    "application/json"
                } else {
                    "application/x-protobuf"
                },
            );
        for (k, v) in &self.headers {
            request = request.header(k.as_str(), v.as_str());
        }
        let request = request.body(http_body_util::Full::new(bytes::Bytes::from(body)))?;
        let response =
            tokio::time::timeout(Duration::from_secs(10), sender.send_request(request)).await??;
        if !response.status().is_success() {
            anyhow::bail!("collector answered {}", response.status());
        }
        Ok(())
    }

    /// Pushes `encode()` every interval until the task is aborted; a failed
    /// push is logged (once per failure streak) and retried next interval.
    pub fn spawn(
        self,
        encode: impl Fn() -> String + Send + Sync + 'static,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut failing = false;
            let mut ticker = tokio::time::interval(self.interval);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                match self.push(&encode()).await {
                    Ok(()) => failing = false,
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!("pushing metrics to {} failed: {e:#}", self.endpoint);
                    }
                    Err(_) => {}
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP bv_http_requests HTTP requests.
# TYPE bv_http_requests counter
bv_http_requests_total{component="a",route="/x",status="200"} 3
bv_http_requests_total{component="b",route="/\"q\"",status="500"} 1
# HELP bv_in_flight Requests in flight.
# TYPE bv_in_flight gauge
bv_in_flight{component="a"} 2
# HELP bv_duration_seconds Durations.
# TYPE bv_duration_seconds histogram
# UNIT bv_duration_seconds seconds
bv_duration_seconds_sum{component="a"} 0.75
bv_duration_seconds_count{component="a"} 3
bv_duration_seconds_bucket{le="0.1",component="a"} 1 # {trace_id="abc"} 0.05 1700000000.0
bv_duration_seconds_bucket{le="0.5",component="a"} 2
bv_duration_seconds_bucket{le="+Inf",component="a"} 3
# EOF
"#;

    #[test]
    fn counters_gauges_and_histograms_map_to_otlp() {
        let request = to_request(
            TEXT,
            &[("service.name".into(), "bv".into())],
            UNIX_EPOCH,
            UNIX_EPOCH + Duration::from_secs(10),
        );
        let metrics = &request.resource_metrics[0].scope_metrics[0].metrics;
        assert_eq!(metrics.len(), 3);

        let Some(metric::Data::Sum(sum)) = &metrics[0].data else {
            panic!("counter is not a sum: {:?}", metrics[0]);
        };
        assert!(sum.is_monotonic);
        assert_eq!(sum.data_points.len(), 2);
        assert_eq!(
            sum.data_points[1].value,
            Some(number_data_point::Value::AsDouble(1.0))
        );
        let route = &sum.data_points[1].attributes[1];
        assert_eq!(route.key, "route");
        assert_eq!(
            route.value.as_ref().unwrap().value,
            Some(any_value::Value::StringValue("/\"q\"".into()))
        );

        let Some(metric::Data::Gauge(gauge)) = &metrics[1].data else {
            panic!("gauge expected");
        };
        assert_eq!(
            gauge.data_points[0].value,
            Some(number_data_point::Value::AsDouble(2.0))
        );

        let Some(metric::Data::Histogram(h)) = &metrics[2].data else {
            panic!("histogram expected");
        };
        assert_eq!(metrics[2].unit, "seconds");
        let p = &h.data_points[0];
        assert_eq!(p.count, 3);
        assert_eq!(p.sum, Some(0.75));
        assert_eq!(p.explicit_bounds, vec![0.1, 0.5]);
        assert_eq!(p.bucket_counts, vec![1, 1, 1]);
        assert_eq!(p.attributes.len(), 1, "le is not an attribute");
        assert_eq!(p.time_unix_nano, 10_000_000_000);
    }

    #[test]
    fn unparsable_lines_are_skipped() {
        let families = parse("# TYPE x counter\nx_total{a=\"1\" 5\nx_total 7\n");
        assert_eq!(families[0].samples.len(), 1);
        assert_eq!(families[0].samples[0].value, 7.0);
    }
}
