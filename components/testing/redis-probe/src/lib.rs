//! `redis-probe`: test component for outbound Redis and SQLite.
//!
//! Every request is a JSON command in the body of a `POST`; the answer is
//! JSON, status 200 on success and 500 with `{"error": "<WIT error>"}` on
//! failure.
//!
//! | path      | body                                                                 | answer |
//! |-----------|----------------------------------------------------------------------|--------|
//! | `/redis`  | `{"address", "op", "key"?, "keys"?, "value"?, "values"?, "channel"?, "command"?, "args"?}` | the op's result |
//! | `/sqlite` | `{"db", "sql", "params"?}`                                            | `{"columns", "rows", "last_insert_rowid", "changes"}` |
//!
//! Redis ops: `publish`, `get`, `set`, `incr`, `del`, `sadd`, `smembers`,
//! `srem`, `execute`, `open` (only opens). `execute` arguments are
//! `{"int": n}` or `{"bin": "text"}` / `{"bytes": [..]}`; its results are
//! `{"nil": null}`, `{"status": s}`, `{"int": n}`, `{"bin": "text"}` (or
//! `{"bytes": [..]}` when not UTF-8).
//!
//! SQLite values are `{"int": n}`, `{"real": x}`, `{"text": s}`,
//! `{"blob": [..]}` and `{"null": null}`, both ways.

use bytes::Bytes;
use serde_json::{json, Value as Json};
use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{FullBody, Request, Response};
use spin_sdk::http_service;
use spin_sdk::redis::{Connection, RedisParameter, RedisResult};
use spin_sdk::sqlite::{Connection as Sqlite, Value};

type Reply = Response<FullBody<Bytes>>;

#[http_service]
async fn handle(req: Request) -> Reply {
    let path = req.uri().path().to_owned();
    let body = match req.into_body().bytes().await {
        Ok(body) => body,
        Err(e) => return reply(400, json!({ "error": format!("{e:?}") })),
    };
    let command: Json = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return reply(400, json!({ "error": e.to_string() })),
    };
    let result = match path.as_str() {
        "/redis" => redis(&command).await,
        "/sqlite" => sqlite(&command).await,
        _ => return reply(404, json!({ "error": "unknown path" })),
    };
    match result {
        Ok(value) => reply(200, value),
        Err(error) => reply(500, json!({ "error": error })),
    }
}

fn str_of<'a>(c: &'a Json, name: &str) -> &'a str {
    c[name].as_str().unwrap_or_default()
}

fn strings(c: &Json, name: &str) -> Vec<String> {
    c[name]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn bytes_of(v: &Json) -> Vec<u8> {
    match v {
        Json::String(s) => s.as_bytes().to_vec(),
        Json::Array(a) => a.iter().map(|b| b.as_u64().unwrap_or(0) as u8).collect(),
        _ => Vec::new(),
    }
}

fn binary(b: Vec<u8>) -> Json {
    match String::from_utf8(b) {
        Ok(s) => json!({ "bin": s }),
        Err(e) => json!({ "bytes": e.into_bytes() }),
    }
}

async fn redis(c: &Json) -> Result<Json, String> {
    let e = |e: spin_sdk::redis::Error| format!("{e:?}");
    let conn = Connection::open(str_of(c, "address")).await.map_err(e)?;
    let key = str_of(c, "key");
    Ok(match str_of(c, "op") {
        "open" => Json::Null,
        "publish" => {
            conn.publish(str_of(c, "channel"), bytes_of(&c["value"]))
                .await
                .map_err(e)?;
            Json::Null
        }
        "get" => match conn.get(key).await.map_err(e)? {
            Some(v) => binary(v),
            None => Json::Null,
        },
        "set" => {
            conn.set(key, bytes_of(&c["value"])).await.map_err(e)?;
            Json::Null
        }
        "incr" => json!(conn.incr(key).await.map_err(e)?),
        "del" => json!(conn.del(strings(c, "keys")).await.map_err(e)?),
        "sadd" => json!(conn.sadd(key, strings(c, "values")).await.map_err(e)?),
        "smembers" => {
            let mut members = conn.smembers(key).await.map_err(e)?;
            members.sort();
            json!(members)
        }
        "srem" => json!(conn.srem(key, strings(c, "values")).await.map_err(e)?),
        "execute" => {
            let args = c["args"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|a| match a.get("int").and_then(Json::as_i64) {
                    Some(i) => RedisParameter::Int64(i),
                    None => RedisParameter::Binary(bytes_of(
                        a.get("bin")
                            .or_else(|| a.get("bytes"))
                            .unwrap_or(&Json::Null),
                    )),
                });
            let results = conn.execute(str_of(c, "command"), args).await.map_err(e)?;
            Json::Array(
                results
                    .into_iter()
                    .map(|r| match r {
                        RedisResult::Nil => json!({ "nil": null }),
                        RedisResult::Status(s) => json!({ "status": s }),
                        RedisResult::Int64(i) => json!({ "int": i }),
                        RedisResult::Binary(b) => binary(b),
                    })
                    .collect(),
            )
        }
        other => return Err(format!("unknown op `{other}`")),
    })
}

fn to_value(v: &Json) -> Value {
    if let Some(i) = v.get("int").and_then(Json::as_i64) {
        Value::Integer(i)
    } else if let Some(f) = v.get("real").and_then(Json::as_f64) {
        Value::Real(f)
    } else if let Some(s) = v.get("text").and_then(Json::as_str) {
        Value::Text(s.to_owned())
    } else if let Some(b) = v.get("blob") {
        Value::Blob(bytes_of(b))
    } else {
        Value::Null
    }
}

fn from_value(v: Value) -> Json {
    match v {
        Value::Integer(i) => json!({ "int": i }),
        Value::Real(f) => json!({ "real": f }),
        Value::Text(s) => json!({ "text": s }),
        Value::Blob(b) => json!({ "blob": b }),
        Value::Null => json!({ "null": null }),
    }
}

async fn sqlite(c: &Json) -> Result<Json, String> {
    let e = |e: spin_sdk::sqlite::Error| format!("{e:?}");
    let conn = Sqlite::open(str_of(c, "db")).await.map_err(e)?;
    let params: Vec<Value> = c["params"]
        .as_array()
        .map(|a| a.iter().map(to_value).collect())
        .unwrap_or_default();
    let result = conn.execute(str_of(c, "sql"), params).await.map_err(e)?;
    let columns = result.columns().to_vec();
    let rows = result.collect().await.map_err(e)?;
    let rows: Vec<Json> = rows
        .into_iter()
        .map(|r| Json::Array(r.values.into_iter().map(from_value).collect()))
        .collect();
    Ok(json!({
        "columns": columns,
        "rows": rows,
        "last_insert_rowid": conn.last_insert_rowid().await,
        "changes": conn.changes().await,
    }))
}

fn reply(status: u16, value: Json) -> Reply {
    let mut response = Response::builder()
        .status(status)
        .body(FullBody::new(Bytes::from(value.to_string())))
        .expect("valid status");
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}
