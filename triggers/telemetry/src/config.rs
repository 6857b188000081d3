//! Which traces to export, from the standard `OTEL_*` variables.
//!
//! The OpenTelemetry SDK and exporter read most variables themselves, but
//! fall back silently on a value they do not understand (an unknown
//! protocol becomes protobuf, an unknown sampler `parentbased_always_on`).
//! A typo in a deployment should not quietly change what is exported, so
//! every variable that decides *whether* and *how* traces leave the process
//! is checked here first, and a bad one stops start-up with its name.

use anyhow::{bail, Context as _};

/// The wire encoding of OTLP over HTTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `http/protobuf` (the default).
    HttpProtobuf,
    /// `http/json`.
    HttpJson,
}

/// What the environment asks for, once checked.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceConfig {
    /// Wire encoding.
    pub protocol: Protocol,
    /// Time one export may take.
    pub timeout: std::time::Duration,
}

const SAMPLERS: &[&str] = &[
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
];

/// Reads the trace settings through `var` (the process environment in
/// production); `Ok(None)` when traces are off: no endpoint, the SDK
/// disabled, or `OTEL_TRACES_EXPORTER=none`.
pub fn trace_config(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<TraceConfig>> {
    let var = |name: &str| {
        var(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    if let Some(disabled) = var("OTEL_SDK_DISABLED") {
        match disabled.to_ascii_lowercase().as_str() {
            "true" => return Ok(None),
            "false" => {}
            other => bail!("OTEL_SDK_DISABLED must be `true` or `false`, not `{other}`"),
        }
    }
    match var("OTEL_TRACES_EXPORTER").as_deref() {
        None | Some("otlp") => {}
        Some("none") => return Ok(None),
        Some(other) => bail!(
            "OTEL_TRACES_EXPORTER `{other}` is not supported: use `otlp` (or `none` to turn traces off)"
        ),
    }
    let endpoint = match (
        var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        var("OTEL_EXPORTER_OTLP_ENDPOINT"),
    ) {
        (Some(e), _) => ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", e),
        (None, Some(e)) => ("OTEL_EXPORTER_OTLP_ENDPOINT", e),
        (None, None) => return Ok(None),
    };
    check_endpoint(endpoint.0, &endpoint.1)?;

    let protocol = match var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .map(|p| ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", p))
        .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL").map(|p| ("OTEL_EXPORTER_OTLP_PROTOCOL", p)))
    {
        None => Protocol::HttpProtobuf,
        Some((_, p)) if p == "http/protobuf" => Protocol::HttpProtobuf,
        Some((_, p)) if p == "http/json" => Protocol::HttpJson,
        Some((name, p)) if p == "grpc" => {
            bail!("{name}=grpc is not supported by bv: use `http/protobuf` or `http/json`")
        }
        Some((name, p)) => {
            bail!("{name} `{p}` is not a protocol: use `http/protobuf` or `http/json`")
        }
    };

    for name in [
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        "OTEL_EXPORTER_OTLP_HEADERS",
    ] {
        if let Some(headers) = var(name) {
            for pair in headers.split(',').filter(|p| !p.trim().is_empty()) {
                match pair.split_once('=') {
                    Some((key, _)) if !key.trim().is_empty() => {}
                    _ => bail!("{name}: `{pair}` is not `key=value`"),
                }
            }
        }
    }

    let sampler = var("OTEL_TRACES_SAMPLER");
    if let Some(sampler) = &sampler {
        if !SAMPLERS.contains(&sampler.as_str()) {
            bail!(
                "OTEL_TRACES_SAMPLER `{sampler}` is not supported: use one of {}",
                SAMPLERS.join(", ")
            );
        }
    }
    if let Some(arg) = var("OTEL_TRACES_SAMPLER_ARG") {
        if sampler
            .as_deref()
            .is_some_and(|s| s.ends_with("traceidratio"))
        {
            arg.parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .with_context(|| {
                    format!("OTEL_TRACES_SAMPLER_ARG `{arg}` is not a ratio between 0 and 1")
                })?;
        }
    }

    let timeout_ms = match var("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
        .map(|t| ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", t))
        .or_else(|| var("OTEL_EXPORTER_OTLP_TIMEOUT").map(|t| ("OTEL_EXPORTER_OTLP_TIMEOUT", t)))
    {
        None => 10_000,
        Some((name, t)) => t
            .parse::<u64>()
            .with_context(|| format!("{name} `{t}` is not a number of milliseconds"))?,
    };

    for name in [
        "OTEL_BSP_SCHEDULE_DELAY",
        "OTEL_BSP_EXPORT_TIMEOUT",
        "OTEL_BSP_MAX_QUEUE_SIZE",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    ] {
        if let Some(value) = var(name) {
            value
                .parse::<u64>()
                .with_context(|| format!("{name} `{value}` is not a whole number"))?;
        }
    }

    Ok(Some(TraceConfig {
        protocol,
        timeout: std::time::Duration::from_millis(timeout_ms),
    }))
}

/// An endpoint must be an `http://` or `https://` URL with a host.
fn check_endpoint(name: &str, endpoint: &str) -> anyhow::Result<()> {
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(()),
        _ => bail!("{name} `{endpoint}` is not an http:// or https:// URL"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> anyhow::Result<Option<TraceConfig>> {
        trace_config(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    const ENDPOINT: (&str, &str) = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");

    #[test]
    fn off_without_an_endpoint_or_when_disabled() {
        assert_eq!(config(&[]).unwrap(), None);
        assert_eq!(
            config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]).unwrap(),
            None
        );
        assert_eq!(
            config(&[ENDPOINT, ("OTEL_SDK_DISABLED", "TRUE")]).unwrap(),
            None
        );
        assert_eq!(
            config(&[ENDPOINT, ("OTEL_TRACES_EXPORTER", "none")]).unwrap(),
            None
        );
    }

    #[test]
    fn on_with_an_endpoint() {
        let c = config(&[ENDPOINT]).unwrap().unwrap();
        assert_eq!(c.protocol, Protocol::HttpProtobuf);
        assert_eq!(c.timeout, std::time::Duration::from_secs(10));
        let c = config(&[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "https://collector/v1/traces",
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=secret,x=y"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.protocol, Protocol::HttpJson);
        assert_eq!(c.timeout, std::time::Duration::from_millis(2500));
    }

    #[test]
    fn bad_values_are_errors_that_name_the_variable() {
        for (vars, needle) in [
            (
                vec![ENDPOINT, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/xml")],
                "OTEL_EXPORTER_OTLP_PROTOCOL `http/xml`",
            ),
            (
                vec![ENDPOINT, ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")],
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=grpc",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")],
                "OTEL_EXPORTER_OTLP_ENDPOINT `collector:4318`",
            ),
            (
                vec![ENDPOINT, ("OTEL_TRACES_SAMPLER", "sometimes")],
                "OTEL_TRACES_SAMPLER `sometimes`",
            ),
            (
                vec![
                    ENDPOINT,
                    ("OTEL_TRACES_SAMPLER", "traceidratio"),
                    ("OTEL_TRACES_SAMPLER_ARG", "2"),
                ],
                "OTEL_TRACES_SAMPLER_ARG `2`",
            ),
            (
                vec![ENDPOINT, ("OTEL_EXPORTER_OTLP_HEADERS", "novalue")],
                "OTEL_EXPORTER_OTLP_HEADERS: `novalue`",
            ),
            (
                vec![ENDPOINT, ("OTEL_SDK_DISABLED", "yes")],
                "OTEL_SDK_DISABLED",
            ),
            (
                vec![ENDPOINT, ("OTEL_BSP_SCHEDULE_DELAY", "soon")],
                "OTEL_BSP_SCHEDULE_DELAY `soon`",
            ),
        ] {
            let err = format!("{:#}", config(&vars).unwrap_err());
            assert!(err.contains(needle), "`{err}` should name `{needle}`");
        }
    }
}
