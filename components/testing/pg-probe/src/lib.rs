//! `pg-probe`: the test component behind the `spin:postgres` integration
//! tests and the Postgres lookup benchmark.
//!
//! The database address is the component variable `db_url`. Endpoints (path
//! info after the route):
//!
//! | path                 | answer                                                        |
//! |----------------------|---------------------------------------------------------------|
//! | `POST /query`        | body `{sql, params: [typed], mode?: "query"/"execute", api?: "async"/"sync"}`: 200 `{columns, rows}` or `{affected}` |
//! | `POST /tx`           | body `{value, end: "commit"/"rollback"}`: `BEGIN`, insert into `items`, then the end, on one connection; 200 `{pid}` |
//! | `POST /leave-open`   | body `{value}`: `BEGIN`, insert into `items`, drop the connection without ending it; 200 `{pid}` |
//! | `GET /session`       | 200 `{pid, xid}`: the pooled session's backend and its assigned transaction id (`null` outside a transaction that wrote) |
//! | `GET /product/<id>`  | 200 `{id, name, price, stock}` from `products`; 404 `{"error":"not found"}` |
//!
//! Typed values are `{"type": "<WIT case>", "value": ...}`; errors are
//! `{"error": "<WIT case>", "sqlstate", "message", ...}` with 400 for
//! `bad-parameter` / `value-conversion-failed` and 500 otherwise.

use bytes::Bytes;
use serde_json::{json, Value};
use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{FullBody, Request, Response};
use spin_sdk::http_service;
use spin_sdk::pg::wit::postgres as wit;
use spin_sdk::pg::{
    Connection, DbDataType, DbValue, Error as SdkError, Interval, ParameterValue, PgError,
    QueryError, RangeBoundKind,
};

type Reply = Response<FullBody<Bytes>>;

#[http_service]
async fn handle(req: Request) -> Reply {
    let path_info = match req.headers().get("spin-path-info") {
        Some(value) => value.to_str().unwrap_or("").to_owned(),
        None => req.uri().path().to_owned(),
    };
    let path = path_info.trim_start_matches('/').to_string();
    let url = match spin_sdk::variables::get("db_url").await {
        Ok(url) => url,
        Err(e) => {
            return reply(
                500,
                json!({"error": "variable", "message": format!("{e:?}")}),
            )
        }
    };
    if let Some(id) = path.strip_prefix("product/") {
        return product(&url, id).await;
    }
    if path == "session" {
        return done(session(&url).await);
    }
    let body: Value = match req.into_body().bytes().await {
        Ok(b) if b.is_empty() => Value::Null,
        Ok(b) => match serde_json::from_slice(&b) {
            Ok(v) => v,
            Err(e) => return reply(400, json!({"error": "request", "message": e.to_string()})),
        },
        Err(e) => {
            return reply(
                400,
                json!({"error": "request", "message": format!("{e:?}")}),
            )
        }
    };
    match path.as_str() {
        "query" => query(&url, &body).await,
        "tx" => done(tx(&url, &body).await),
        "leave-open" => done(leave_open(&url, &body).await),
        _ => reply(404, json!({"error": "unknown pg-probe action"})),
    }
}

fn reply(status: u16, body: Value) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(FullBody::new(Bytes::from(body.to_string())))
        .expect("valid status")
}

fn done(result: Result<Value, Failure>) -> Reply {
    match result {
        Ok(v) => reply(200, v),
        Err(f) => f.reply(),
    }
}

/// A failed call, as the tests see it.
enum Failure {
    Pg(PgError),
    Request(String),
}

impl From<PgError> for Failure {
    fn from(e: PgError) -> Self {
        Failure::Pg(e)
    }
}

impl From<SdkError> for Failure {
    fn from(e: SdkError) -> Self {
        match e {
            SdkError::PgError(e) => Failure::Pg(e),
            other => Failure::Request(other.to_string()),
        }
    }
}

impl Failure {
    fn reply(self) -> Reply {
        let e = match self {
            Failure::Request(m) => return reply(400, json!({"error": "request", "message": m})),
            Failure::Pg(e) => e,
        };
        let (status, body) = match e {
            PgError::ConnectionFailed(m) => {
                (500, json!({"error": "connection-failed", "message": m}))
            }
            PgError::BadParameter(m) => (400, json!({"error": "bad-parameter", "message": m})),
            PgError::ValueConversionFailed(m) => (
                400,
                json!({"error": "value-conversion-failed", "message": m}),
            ),
            PgError::Other(m) => (500, json!({"error": "other", "message": m})),
            PgError::QueryFailed(QueryError::Text(m)) => {
                (500, json!({"error": "query-failed", "message": m}))
            }
            PgError::QueryFailed(QueryError::DbError(db)) => (
                500,
                json!({
                    "error": "query-failed",
                    "sqlstate": db.code,
                    "message": db.message,
                    "severity": db.severity,
                    "detail": db.detail,
                    "as_text": db.as_text,
                    "extras": db
                        .extras
                        .into_iter()
                        .map(|(k, v)| (k, Value::String(v)))
                        .collect::<serde_json::Map<_, _>>(),
                }),
            ),
        };
        reply(status, body)
    }
}

async fn query(url: &str, body: &Value) -> Reply {
    let sql = body["sql"].as_str().unwrap_or_default().to_string();
    let params: Vec<ParameterValue> = match body["params"]
        .as_array()
        .map(|a| a.iter().map(to_param).collect::<Result<_, _>>())
        .unwrap_or(Ok(Vec::new()))
    {
        Ok(p) => p,
        Err(m) => return reply(400, json!({"error": "request", "message": m})),
    };
    let execute = body["mode"] == "execute";
    let result = if body["api"] == "sync" {
        run_sync(url, &sql, params, execute)
    } else {
        run_async(url, &sql, params, execute).await
    };
    done(result)
}

fn rowset(columns: &[wit::Column], rows: Vec<Vec<DbValue>>) -> Value {
    json!({
        "columns": columns.iter().map(|c| json!({"name": c.name, "type": data_type(&c.data_type)})).collect::<Vec<_>>(),
        "rows": rows.into_iter().map(|r| r.into_iter().map(from_value).collect::<Vec<_>>()).collect::<Vec<_>>(),
    })
}

async fn run_async(
    url: &str,
    sql: &str,
    params: Vec<ParameterValue>,
    execute: bool,
) -> Result<Value, Failure> {
    let conn = Connection::open(url).await?;
    if execute {
        return Ok(json!({"affected": conn.execute(sql, params).await?}));
    }
    let result = conn.query(sql, params).await?;
    let columns = result.columns().to_vec();
    let (_, mut stream, done) = result.into_inner();
    let mut rows = Vec::new();
    while let Some(row) = stream.next().await {
        rows.push(row);
    }
    done.await?;
    Ok(rowset(&columns, rows))
}

// `PgError` carries a whole server error record (SQLSTATE, message, detail,
// extras): past clippy's size limit where pointers are 8 bytes, and returned
// by value as the bindings return it.
#[allow(clippy::result_large_err)]
fn run_sync(
    url: &str,
    sql: &str,
    params: Vec<ParameterValue>,
    execute: bool,
) -> Result<Value, Failure> {
    let conn = wit::Connection::open(url)?;
    if execute {
        return Ok(json!({"affected": conn.execute(sql, &params)?}));
    }
    let set = conn.query(sql, &params)?;
    Ok(rowset(&set.columns, set.rows))
}

async fn scalar(conn: &Connection, sql: &str) -> Result<Value, Failure> {
    let rows = conn
        .query(sql, Vec::<ParameterValue>::new())
        .await?
        .collect()
        .await?;
    let row = rows
        .into_iter()
        .next()
        .ok_or(Failure::Request("no row".into()))?;
    Ok(from_value(row[0].clone())["value"].clone())
}

async fn tx(url: &str, body: &Value) -> Result<Value, Failure> {
    let value = body["value"].as_str().unwrap_or_default().to_string();
    let conn = Connection::open(url).await?;
    let pid = scalar(&conn, "SELECT pg_backend_pid()").await?;
    conn.execute("BEGIN", Vec::<ParameterValue>::new()).await?;
    conn.execute(
        "INSERT INTO items (v) VALUES ($1)",
        vec![ParameterValue::Str(value)],
    )
    .await?;
    let end = if body["end"] == "commit" {
        "COMMIT"
    } else {
        "ROLLBACK"
    };
    conn.execute(end, Vec::<ParameterValue>::new()).await?;
    Ok(json!({"pid": pid}))
}

async fn leave_open(url: &str, body: &Value) -> Result<Value, Failure> {
    let value = body["value"].as_str().unwrap_or_default().to_string();
    let conn = Connection::open(url).await?;
    let pid = scalar(&conn, "SELECT pg_backend_pid()").await?;
    conn.execute("BEGIN", Vec::<ParameterValue>::new()).await?;
    conn.execute(
        "INSERT INTO items (v) VALUES ($1)",
        vec![ParameterValue::Str(value)],
    )
    .await?;
    drop(conn);
    Ok(json!({"pid": pid}))
}

async fn session(url: &str) -> Result<Value, Failure> {
    let conn = Connection::open(url).await?;
    let pid = scalar(&conn, "SELECT pg_backend_pid()").await?;
    let xid = scalar(&conn, "SELECT txid_current_if_assigned()").await?;
    Ok(json!({"pid": pid, "xid": xid}))
}

async fn product(url: &str, id: &str) -> Reply {
    let Ok(id) = id.parse::<i32>() else {
        return reply(400, json!({"error": "bad id"}));
    };
    let lookup = async {
        let conn = Connection::open(url).await?;
        let rows = conn
            .query(
                "SELECT id, name, price::text, stock FROM products WHERE id = $1",
                vec![ParameterValue::Int32(id)],
            )
            .await?
            .collect()
            .await?;
        Ok::<_, Failure>(rows.into_iter().next().map(|row| {
            let text = |i: usize| match &row[i] {
                DbValue::Str(s) => Value::String(s.clone()),
                _ => Value::Null,
            };
            let int = |i: usize| match &row[i] {
                DbValue::Int32(n) => json!(n),
                _ => Value::Null,
            };
            json!({"id": int(0), "name": text(1), "price": text(2), "stock": int(3)})
        }))
    };
    match lookup.await {
        Ok(Some(v)) => reply(200, v),
        Ok(None) => reply(404, json!({"error": "not found"})),
        Err(f) => f.reply(),
    }
}

fn data_type(t: &DbDataType) -> String {
    let name = match t {
        DbDataType::Boolean => "boolean",
        DbDataType::Int8 => "int8",
        DbDataType::Int16 => "int16",
        DbDataType::Int32 => "int32",
        DbDataType::Int64 => "int64",
        DbDataType::Floating32 => "floating32",
        DbDataType::Floating64 => "floating64",
        DbDataType::Str => "str",
        DbDataType::Binary => "binary",
        DbDataType::Date => "date",
        DbDataType::Time => "time",
        DbDataType::Datetime => "datetime",
        DbDataType::Timestamp => "timestamp",
        DbDataType::Uuid => "uuid",
        DbDataType::Jsonb => "jsonb",
        DbDataType::Decimal => "decimal",
        DbDataType::RangeInt32 => "range-int32",
        DbDataType::RangeInt64 => "range-int64",
        DbDataType::RangeDecimal => "range-decimal",
        DbDataType::ArrayInt32 => "array-int32",
        DbDataType::ArrayInt64 => "array-int64",
        DbDataType::ArrayDecimal => "array-decimal",
        DbDataType::ArrayStr => "array-str",
        DbDataType::Interval => "interval",
        DbDataType::Other(name) => return format!("other:{name}"),
    };
    name.to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err("odd-length hex".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| e.to_string()))
        .collect()
}

fn kind(k: &RangeBoundKind) -> &'static str {
    match k {
        RangeBoundKind::Inclusive => "inclusive",
        RangeBoundKind::Exclusive => "exclusive",
    }
}

/// One end of a range: its value and whether it is included; `None`:
/// unbounded.
type RangeBound<T> = Option<(T, RangeBoundKind)>;

fn range_json<T: Into<Value> + Clone>(r: &(RangeBound<T>, RangeBound<T>)) -> Value {
    let b = |b: &RangeBound<T>| match b {
        None => Value::Null,
        Some((v, k)) => json!([v.clone().into(), kind(k)]),
    };
    json!({"lower": b(&r.0), "upper": b(&r.1)})
}

fn from_value(v: DbValue) -> Value {
    let (t, value) = match v {
        DbValue::Boolean(b) => ("boolean", json!(b)),
        DbValue::Int8(n) => ("int8", json!(n)),
        DbValue::Int16(n) => ("int16", json!(n)),
        DbValue::Int32(n) => ("int32", json!(n)),
        DbValue::Int64(n) => ("int64", json!(n)),
        DbValue::Floating32(f) => ("floating32", json!(f)),
        DbValue::Floating64(f) => ("floating64", json!(f)),
        DbValue::Str(s) => ("str", json!(s)),
        DbValue::Binary(b) => ("binary", json!(hex(&b))),
        DbValue::Date((y, m, d)) => ("date", json!([y, m, d])),
        DbValue::Time((h, m, s, ns)) => ("time", json!([h, m, s, ns])),
        DbValue::Datetime((y, mo, d, h, mi, s, ns)) => {
            ("datetime", json!([y, mo, d, h, mi, s, ns]))
        }
        DbValue::Timestamp(n) => ("timestamp", json!(n)),
        DbValue::Uuid(s) => ("uuid", json!(s)),
        DbValue::Jsonb(b) => match serde_json::from_slice::<Value>(&b) {
            Ok(v) => ("jsonb", v),
            Err(_) => ("jsonb", json!({"raw": hex(&b)})),
        },
        DbValue::Decimal(s) => ("decimal", json!(s)),
        DbValue::RangeInt32(r) => ("range-int32", range_json(&r)),
        DbValue::RangeInt64(r) => ("range-int64", range_json(&r)),
        DbValue::RangeDecimal(r) => ("range-decimal", range_json(&r)),
        DbValue::ArrayInt32(a) => ("array-int32", json!(a)),
        DbValue::ArrayInt64(a) => ("array-int64", json!(a)),
        DbValue::ArrayDecimal(a) => ("array-decimal", json!(a)),
        DbValue::ArrayStr(a) => ("array-str", json!(a)),
        DbValue::Interval(i) => (
            "interval",
            json!({"micros": i.micros, "days": i.days, "months": i.months}),
        ),
        DbValue::DbNull => ("db-null", Value::Null),
        DbValue::Unsupported(b) => ("unsupported", json!(hex(&b))),
    };
    json!({"type": t, "value": value})
}

fn bound<T>(
    v: &Value,
    conv: impl Fn(&Value) -> Result<T, String>,
) -> Result<Option<(T, RangeBoundKind)>, String> {
    if v.is_null() {
        return Ok(None);
    }
    let k = match v[1].as_str() {
        Some("inclusive") => RangeBoundKind::Inclusive,
        Some("exclusive") => RangeBoundKind::Exclusive,
        other => return Err(format!("bad bound kind {other:?}")),
    };
    Ok(Some((conv(&v[0])?, k)))
}

fn to_param(p: &Value) -> Result<ParameterValue, String> {
    let v = &p["value"];
    let int = |v: &Value| v.as_i64().ok_or_else(|| format!("not an integer: {v}"));
    let string = |v: &Value| {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("not a string: {v}"))
    };
    let nums = |v: &Value| -> Result<Vec<i64>, String> {
        v.as_array()
            .ok_or("not an array")?
            .iter()
            .map(int)
            .collect()
    };
    let opt_list = |v: &Value| -> Result<Vec<Value>, String> {
        Ok(v.as_array().ok_or("not an array")?.clone())
    };
    let t = p["type"].as_str().unwrap_or_default();
    Ok(match t {
        "boolean" => ParameterValue::Boolean(v.as_bool().ok_or("not a bool")?),
        "int8" => ParameterValue::Int8(int(v)? as i8),
        "int16" => ParameterValue::Int16(int(v)? as i16),
        "int32" => ParameterValue::Int32(int(v)? as i32),
        "int64" => ParameterValue::Int64(int(v)?),
        "floating32" => ParameterValue::Floating32(v.as_f64().ok_or("not a number")? as f32),
        "floating64" => ParameterValue::Floating64(v.as_f64().ok_or("not a number")?),
        "str" => ParameterValue::Str(string(v)?),
        "binary" => ParameterValue::Binary(unhex(&string(v)?)?),
        "date" => {
            let n = nums(v)?;
            ParameterValue::Date((n[0] as i32, n[1] as u8, n[2] as u8))
        }
        "time" => {
            let n = nums(v)?;
            ParameterValue::Time((n[0] as u8, n[1] as u8, n[2] as u8, n[3] as u32))
        }
        "datetime" => {
            let n = nums(v)?;
            ParameterValue::Datetime((
                n[0] as i32,
                n[1] as u8,
                n[2] as u8,
                n[3] as u8,
                n[4] as u8,
                n[5] as u8,
                n[6] as u32,
            ))
        }
        "timestamp" => ParameterValue::Timestamp(int(v)?),
        "uuid" => ParameterValue::Uuid(string(v)?),
        "jsonb" => ParameterValue::Jsonb(v.to_string().into_bytes()),
        "jsonb-raw" => ParameterValue::Jsonb(unhex(&string(v)?)?),
        "decimal" => ParameterValue::Decimal(string(v)?),
        "range-int32" => ParameterValue::RangeInt32((
            bound(&v["lower"], |x| int(x).map(|n| n as i32))?,
            bound(&v["upper"], |x| int(x).map(|n| n as i32))?,
        )),
        "range-int64" => {
            ParameterValue::RangeInt64((bound(&v["lower"], int)?, bound(&v["upper"], int)?))
        }
        "range-decimal" => {
            ParameterValue::RangeDecimal((bound(&v["lower"], string)?, bound(&v["upper"], string)?))
        }
        "array-int32" => ParameterValue::ArrayInt32(
            opt_list(v)?
                .iter()
                .map(|x| {
                    if x.is_null() {
                        Ok(None)
                    } else {
                        int(x).map(|n| Some(n as i32))
                    }
                })
                .collect::<Result<_, _>>()?,
        ),
        "array-int64" => ParameterValue::ArrayInt64(
            opt_list(v)?
                .iter()
                .map(|x| {
                    if x.is_null() {
                        Ok(None)
                    } else {
                        int(x).map(Some)
                    }
                })
                .collect::<Result<_, _>>()?,
        ),
        "array-decimal" | "array-str" => {
            let items = opt_list(v)?
                .iter()
                .map(|x| {
                    if x.is_null() {
                        Ok(None)
                    } else {
                        string(x).map(Some)
                    }
                })
                .collect::<Result<_, _>>()?;
            if t == "array-str" {
                ParameterValue::ArrayStr(items)
            } else {
                ParameterValue::ArrayDecimal(items)
            }
        }
        "interval" => ParameterValue::Interval(Interval {
            micros: int(&v["micros"])?,
            days: int(&v["days"])? as i32,
            months: int(&v["months"])? as i32,
        }),
        "db-null" => ParameterValue::DbNull,
        other => return Err(format!("unknown parameter type `{other}`")),
    })
}
