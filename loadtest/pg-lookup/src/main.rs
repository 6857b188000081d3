//! `pg-lookup-native`: the native baseline of `loadtest/pg-lookup.sh`.
//!
//! Answers `GET /pg/product/<id>` exactly as the `pg-probe` component does:
//! 200 `{"id","name","price","stock"}` (compact JSON, `price` as text), 404
//! `{"error":"not found"}`. hyper 1 on a multi-threaded tokio runtime, one
//! deadpool-postgres pool (16 connections, prepared statements cached per
//! connection) — the same pool shape `bv` uses.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::str::FromStr;

use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio_postgres::NoTls;

fn usage() -> ! {
    eprintln!("usage: pg-lookup-native --db URL [--listen ADDR]   (default 127.0.0.1:3000)");
    std::process::exit(2);
}

fn reply(status: u16, body: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

async fn lookup(pool: &Pool, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(id) = req.uri().path().strip_prefix("/pg/product/") else {
        return reply(404, json!({"error": "unknown pg-probe action"}));
    };
    let Ok(id) = id.parse::<i32>() else {
        return reply(400, json!({"error": "bad id"}));
    };
    let result = async {
        let client = pool.get().await.map_err(|e| e.to_string())?;
        let stmt = client
            .prepare_cached("SELECT id, name, price::text, stock FROM products WHERE id = $1")
            .await
            .map_err(|e| e.to_string())?;
        client
            .query_opt(&stmt, &[&id])
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    match result {
        Ok(Some(row)) => reply(
            200,
            json!({
                "id": row.get::<_, i32>(0),
                "name": row.get::<_, String>(1),
                "price": row.get::<_, String>(2),
                "stock": row.get::<_, i32>(3),
            }),
        ),
        Ok(None) => reply(404, json!({"error": "not found"})),
        Err(e) => reply(500, json!({"error": "other", "message": e})),
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> std::io::Result<()> {
    let mut listen: SocketAddr = "127.0.0.1:3000".parse().unwrap();
    let mut db = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                listen = args
                    .next()
                    .unwrap_or_else(|| usage())
                    .parse()
                    .unwrap_or_else(|_| usage())
            }
            "--db" => db = Some(args.next().unwrap_or_else(|| usage())),
            _ => usage(),
        }
    }
    let db = db.unwrap_or_else(|| usage());
    let config = tokio_postgres::Config::from_str(&db).unwrap_or_else(|e| {
        eprintln!("bad --db {db:?}: {e}");
        std::process::exit(2)
    });
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager).max_size(16).build().unwrap();
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
        let pool = pool.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let pool = pool.clone();
                async move { Ok::<_, Infallible>(lookup(&pool, &req).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
