//! The OTLP/HTTP span exporter and the tracer provider behind it.
//!
//! The SDK's batch processor exports from a thread of its own, outside any
//! Tokio runtime, while the hyper client needs one. Exports therefore run
//! on a small runtime owned by telemetry (one worker): the request-serving
//! runtime never waits on a collector, and shutting down flushes through a
//! runtime that is still alive.

use std::time::Duration;

use anyhow::Context as _;
use opentelemetry_http::hyper::HyperClient;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

use crate::config::{Protocol, TraceConfig};

/// Sends each export on `runtime` and waits for it from the caller's thread.
#[derive(Debug, Clone)]
pub(crate) struct OnRuntime {
    client: HyperClient,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        self.runtime
            .spawn(async move { client.send_bytes(request).await })
            .await
            .map_err(|e| Box::new(e) as HttpError)?
    }
}

/// A tracer provider exporting in batches as `config` says and sampling
/// with `sampler`, with its export runtime.
pub(crate) fn provider(
    config: &TraceConfig,
    sampler: crate::sampling::EdgeDecided,
) -> anyhow::Result<(SdkTracerProvider, tokio::runtime::Runtime)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bv-otlp")
        .enable_all()
        .build()
        .context("starting the trace export runtime")?;
    let client = OnRuntime {
        client: HyperClient::with_default_connector(config.timeout, None),
        runtime: runtime.handle().clone(),
    };
    let protocol = match config.protocol {
        Protocol::HttpProtobuf => opentelemetry_otlp::Protocol::HttpBinary,
        Protocol::HttpJson => opentelemetry_otlp::Protocol::HttpJson,
    };
    // Endpoint and headers come from the environment (the exporter reads
    // OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT and _HEADERS itself).
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .with_timeout(config.timeout)
        .with_http_client(client)
        .build()
        .context("creating the OTLP span exporter")?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler)
        .with_resource(resource())
        .build();
    Ok((provider, runtime))
}

/// The resource from OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, with
/// `service.name` defaulting to `bv` rather than the SDK's
/// `unknown_service`.
fn resource() -> Resource {
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|s| !s.trim().is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| {
            a.split(',').any(|kv| {
                kv.split_once('=')
                    .is_some_and(|(k, _)| k.trim() == "service.name")
            })
        });
    let builder = Resource::builder().with_attribute(opentelemetry::KeyValue::new(
        "service.version",
        env!("CARGO_PKG_VERSION"),
    ));
    if named {
        builder.build()
    } else {
        builder.with_service_name("bv").build()
    }
}

/// Flushes what is queued and stops the exporter; waits at most `limit`
/// (the collector may be gone).
pub(crate) fn shutdown(
    provider: SdkTracerProvider,
    runtime: tokio::runtime::Runtime,
    limit: Duration,
) {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    // `shutdown` blocks until the batch thread has exported; bound it.
    std::thread::spawn(move || {
        let _ = provider.shutdown();
        let _ = done_tx.send(());
    });
    let _ = done_rx.recv_timeout(limit);
    runtime.shutdown_timeout(Duration::from_millis(100));
}
