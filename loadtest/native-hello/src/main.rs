//! `native-hello`: the native baseline of `loadtest/http-hello.sh`.
//!
//! Answers every request with exactly what `components/hello` answers:
//! `200`, `content-type: text/plain`, `Hello from BitVelocity\n`.
//! Plain hyper 1 on a multi-threaded tokio runtime, HTTP/1.1 with keep-alive.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

const BODY: &[u8] = b"Hello from BitVelocity\n";

fn usage() -> ! {
    eprintln!("usage: native-hello [--listen ADDR]   (default 127.0.0.1:3000)");
    std::process::exit(2);
}

fn parse_listen() -> SocketAddr {
    let mut listen: SocketAddr = "127.0.0.1:3000".parse().unwrap();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = if arg == "--listen" {
            args.next().unwrap_or_else(|| usage())
        } else if let Some(v) = arg.strip_prefix("--listen=") {
            v.to_string()
        } else {
            usage()
        };
        listen = value.parse().unwrap_or_else(|e| {
            eprintln!("bad --listen {value:?}: {e}");
            std::process::exit(2)
        });
    }
    listen
}

async fn hello(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from_static(BODY)))
        .unwrap())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> std::io::Result<()> {
    let listen = parse_listen();
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("Serving http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                eprintln!("accept: {e}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service_fn(hello))
                .await;
        });
    }
}
