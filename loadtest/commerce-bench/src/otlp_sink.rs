//! `commerce-bench otlp-sink`: an OTLP/HTTP endpoint that accepts and drops
//! what `bv` exports, so the tracing benchmark measures `bv`'s cost of
//! tracing, not a collector's. `GET /stats` answers the requests and bytes
//! received per signal, to show the spans really left `bv`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// Where to listen.
#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on (OTEL_EXPORTER_OTLP_ENDPOINT=http://<this>).
    #[arg(long, default_value = "127.0.0.1:4318")]
    listen: SocketAddr,
}

type Stats = Arc<Mutex<BTreeMap<String, (u64, u64)>>>;

async fn serve(stats: Stats, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    if path == "/stats" {
        let body = stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(path, (requests, bytes))| format!("{path} {requests} {bytes}\n"))
            .collect::<String>();
        return Response::new(Full::new(Bytes::from(body)));
    }
    let bytes = match req.into_body().collect().await {
        Ok(body) => body.to_bytes().len() as u64,
        Err(_) => 0,
    };
    let mut stats = stats.lock().unwrap_or_else(|p| p.into_inner());
    let entry = stats.entry(path).or_default();
    entry.0 += 1;
    entry.1 += bytes;
    Response::new(Full::new(Bytes::new()))
}

/// Serves until killed.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    eprintln!("OTLP sink on http://{}", listener.local_addr()?);
    let stats: Stats = Arc::default();
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                eprintln!("accept: {e}");
                continue;
            }
        };
        let stats = stats.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let stats = stats.clone();
                async move { Ok::<_, Infallible>(serve(stats, req).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
