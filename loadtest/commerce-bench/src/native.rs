//! `native-product`: the product component's two GETs in plain Rust, the
//! baseline the product GETs under `bv` are compared with.
//!
//! Same database, same SQL (the component's columns and `WHERE`), same
//! answer byte for byte (body, `ETag`, `Cache-Control`; the script checks
//! the bodies): `GET /api/products/{id}` and `GET /api/products` (first
//! page, `?limit=` honoured). hyper 1 on a multi-threaded tokio runtime and
//! one deadpool-postgres pool of 16 connections with statements prepared
//! once per connection — the pool shape `bv`'s Postgres host uses. What it
//! leaves out is exactly what `bv` adds: the component instance, the
//! component-model calls into the Postgres host, and the guest's decoding.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::str::FromStr;

use anyhow::Context as _;
use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::json;
use tokio_postgres::NoTls;

/// `native-product` options.
#[derive(clap::Args)]
pub struct Args {
    /// The database the product component uses (already migrated).
    #[arg(long)]
    db: String,
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:3401")]
    listen: SocketAddr,
}

/// The component's columns (`components/product/src/store.rs`), in its order.
const COLUMNS: &str = r#"id::text, sku, name, description, category, price_amount, currency, version, seq,
    to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"#;

/// The listing's default and largest page (`components/product/src/listing.rs`).
const DEFAULT_LIMIT: i64 = 20;
const MAX_LIMIT: i64 = 100;

/// The money object as `bv_service::Money` serializes it.
#[derive(Serialize)]
struct Money {
    amount: i64,
    currency: String,
}

/// A product, field for field as the component serializes it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Product {
    id: String,
    sku: String,
    name: String,
    description: String,
    category: String,
    price: Money,
    version: i64,
    created_at: String,
    updated_at: String,
    #[serde(skip)]
    seq: i64,
}

impl Product {
    fn from_row(row: &tokio_postgres::Row) -> Self {
        Self {
            id: row.get(0),
            sku: row.get(1),
            name: row.get(2),
            description: row.get(3),
            category: row.get(4),
            price: Money {
                amount: row.get(5),
                currency: row.get(6),
            },
            version: row.get(7),
            seq: row.get(8),
            created_at: row.get(9),
            updated_at: row.get(10),
        }
    }
}

type Reply = Response<Full<Bytes>>;

fn ok(etag: &str, cache_control: &str, body: Vec<u8>) -> Reply {
    Response::builder()
        .status(200)
        .header("etag", etag)
        .header("cache-control", cache_control)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

fn problem(status: u16, detail: &str) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", "application/problem+json")
        .body(Full::new(Bytes::from(
            json!({ "status": status, "detail": detail }).to_string(),
        )))
        .expect("a valid response")
}

/// The component's list ETag: FNV-1a of the body.
fn etag_of(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("\"{hash:016x}\"")
}

/// A UUID in its text form (what the component's `ProductId` accepts);
/// anything else names no product.
fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

async fn get(pool: &Pool, id: &str) -> anyhow::Result<Reply> {
    if !is_uuid(id) {
        return Ok(problem(404, "no such product"));
    }
    let client = pool.get().await?;
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM product.products WHERE id = $1::text::uuid AND deleted_at IS NULL"
        ))
        .await?;
    let Some(row) = client.query_opt(&stmt, &[&id]).await? else {
        return Ok(problem(404, "no such product"));
    };
    let product = Product::from_row(&row);
    let body = serde_json::to_vec(&product)?;
    Ok(ok(
        &format!("\"{}\"", product.version),
        "public, max-age=30",
        body,
    ))
}

async fn list(pool: &Pool, query: Option<&str>) -> anyhow::Result<Reply> {
    let mut limit = DEFAULT_LIMIT;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("limit", v)) => match v.parse::<i64>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => limit = n,
                _ => return Ok(problem(422, "limit: must be 1 to 100")),
            },
            _ => return Ok(problem(422, "only `limit` is served natively")),
        }
    }
    let client = pool.get().await?;
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM product.products WHERE deleted_at IS NULL ORDER BY seq LIMIT $1::bigint"
        ))
        .await?;
    let rows = client.query(&stmt, &[&(limit + 1)]).await?;
    let mut items: Vec<Product> = rows.iter().map(Product::from_row).collect();
    let mut next = None;
    if items.len() as i64 > limit {
        items.truncate(limit as usize);
        next = items.last().map(|p| p.seq);
    }
    let cursor = next.map(|seq| format!("c{seq:016x}"));
    let link = cursor
        .as_ref()
        .map(|c| format!("/api/products?limit={limit}&cursor={c}"));
    let body = serde_json::to_vec(&json!({
        "items": items,
        "next": link,
        "nextCursor": cursor,
    }))?;
    let etag = etag_of(&body);
    let mut reply = ok(&etag, "public, max-age=5", body);
    if let Some(link) = link {
        let value = format!("<{link}>; rel=\"next\"").parse()?;
        reply.headers_mut().insert("link", value);
    }
    Ok(reply)
}

async fn serve(pool: &Pool, req: &Request<Incoming>) -> Reply {
    if req.method() != hyper::Method::GET {
        return problem(405, "only GET is served natively");
    }
    let path = req.uri().path();
    let result = match path.strip_prefix("/api/products") {
        Some("" | "/") => list(pool, req.uri().query()).await,
        Some(rest) => match rest.strip_prefix('/') {
            Some(id) if !id.contains('/') => get(pool, id).await,
            _ => Ok(problem(404, "no such resource")),
        },
        None => Ok(problem(404, "no such resource")),
    };
    result.unwrap_or_else(|e| problem(500, &format!("{e:#}")))
}

/// Serves until killed.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = tokio_postgres::Config::from_str(&args.db).context("--db")?;
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager).max_size(16).build()?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    eprintln!("native product server on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                eprintln!("accept: {e}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let pool = pool.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let pool = pool.clone();
                async move { Ok::<_, Infallible>(serve(&pool, &req).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
