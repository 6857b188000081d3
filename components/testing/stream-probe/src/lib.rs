//! `stream-probe`: streamed responses for the runtime's streaming tests.
//!
//! It dispatches on the first segment of `spin-path-info`:
//!
//! | path info | answer |
//! |---|---|
//! | `/ticks?n=N&every_ms=M` | `text/event-stream`: events `id: i`, `data: tick i` for i in 1..=N (N = 0: without end), one every M ms; then the stream ends |
//! | `/silent?after=K` | `text/event-stream`: K events at once, then nothing, ever |
//! | `/flood?kb=K` | `application/octet-stream`: K KiB chunks as fast as they are taken, without end |
//!
//! Its output (which `bv` logs) says how each stream ended: `ticks: done
//! after N events`, `ticks: client left after N events`, `flood: client
//! left after N chunks`; `flood` also prints `flood: N chunks queued`
//! every 64 chunks, so a test sees how far a stream ran ahead of its client.

use std::time::Duration;

use bytes::Bytes;
use futures::SinkExt;
use spin_sdk::http::body::stream;
use spin_sdk::http::{FullBody, IntoResponse, Request, Response};
use spin_sdk::http_service;

#[http_service]
async fn handle(req: Request) -> impl IntoResponse {
    let path_info = match req.headers().get("spin-path-info") {
        Some(value) => value.to_str().unwrap_or("").to_owned(),
        None => req.uri().path().to_owned(),
    };
    let action = path_info.trim_start_matches('/').to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let num = |name: &str| -> u64 {
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0)
    };
    let (mut tx, body) = stream::<Bytes>();
    let content_type = match action.as_str() {
        "ticks" => {
            let (n, every) = (num("n"), Duration::from_millis(num("every_ms")));
            spin_sdk::wasip3::spawn(async move {
                let mut i = 0u64;
                while n == 0 || i < n {
                    i += 1;
                    let event = format!("id: {i}\ndata: tick {i}\n\n");
                    if tx.send(Bytes::from(event)).await.is_err() {
                        eprintln!("ticks: client left after {} events", i - 1);
                        return;
                    }
                    spin_sdk::time::sleep(every).await;
                }
                println!("ticks: done after {i} events");
            });
            "text/event-stream"
        }
        "silent" => {
            let after = num("after");
            spin_sdk::wasip3::spawn(async move {
                for i in 1..=after {
                    let event = format!("id: {i}\ndata: tick {i}\n\n");
                    if tx.send(Bytes::from(event)).await.is_err() {
                        return;
                    }
                }
                // Keeps the stream open without sending anything.
                loop {
                    spin_sdk::time::sleep(Duration::from_secs(3600)).await;
                }
            });
            "text/event-stream"
        }
        "flood" => {
            let chunk = Bytes::from(vec![b'x'; (num("kb").max(1) as usize) << 10]);
            spin_sdk::wasip3::spawn(async move {
                let mut sent = 0u64;
                loop {
                    if tx.send(chunk.clone()).await.is_err() {
                        eprintln!("flood: client left after {sent} chunks");
                        return;
                    }
                    sent += 1;
                    if sent.is_multiple_of(64) {
                        println!("flood: {sent} chunks queued");
                    }
                }
            });
            "application/octet-stream"
        }
        _ => {
            return Response::builder()
                .status(404)
                .body(spin_sdk::http::box_body(FullBody::new(Bytes::from_static(
                    b"unknown stream-probe action",
                ))))
                .unwrap();
        }
    };
    Response::builder()
        .status(200)
        .header("content-type", content_type)
        .header("cache-control", "no-cache")
        .body(spin_sdk::http::box_body(body))
        .unwrap()
}
