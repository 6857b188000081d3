//! `mqtt-probe`: test component for outbound MQTT.
//!
//! `POST /publish` with a JSON body `{"topic", "payload", "qos"}` (`qos` 0, 1
//! or 2, default 0; optional `"username"`, `"password"`, `"keep_alive"`)
//! opens a connection to the broker in the component variable
//! `mqtt_address` and publishes. The answer is `{"ok": true}` (200) or
//! `{"error": "<WIT error>", "stage": "open" | "publish"}` (500).

use bytes::Bytes;
use serde_json::{json, Value as Json};
use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{FullBody, Request, Response};
use spin_sdk::http_service;
use spin_sdk::mqtt::{Connection, Qos};

type Reply = Response<FullBody<Bytes>>;

#[http_service]
async fn handle(req: Request) -> Reply {
    if req.uri().path() != "/publish" {
        return reply(404, json!({ "error": "unknown path" }));
    }
    let body = match req.into_body().bytes().await {
        Ok(body) => body,
        Err(e) => return reply(400, json!({ "error": format!("{e:?}") })),
    };
    let c: Json = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return reply(400, json!({ "error": e.to_string() })),
    };
    let address = match spin_sdk::variables::get("mqtt_address").await {
        Ok(a) => a,
        Err(e) => {
            return reply(
                500,
                json!({ "error": format!("{e:?}"), "stage": "variable" }),
            )
        }
    };
    let s = |name: &str| c[name].as_str().unwrap_or_default().to_string();
    let qos = match c["qos"].as_u64().unwrap_or(0) {
        0 => Qos::AtMostOnce,
        1 => Qos::AtLeastOnce,
        _ => Qos::ExactlyOnce,
    };
    let keep_alive = c["keep_alive"].as_u64().unwrap_or(30);
    let conn = match Connection::open(&address, s("username"), s("password"), keep_alive).await {
        Ok(conn) => conn,
        Err(e) => return reply(500, json!({ "error": format!("{e:?}"), "stage": "open" })),
    };
    match conn
        .publish(s("topic"), s("payload").into_bytes(), qos)
        .await
    {
        Ok(()) => reply(200, json!({ "ok": true })),
        Err(e) => reply(
            500,
            json!({ "error": format!("{e:?}"), "stage": "publish" }),
        ),
    }
}

fn reply(status: u16, body: Json) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(FullBody::new(Bytes::from(body.to_string())))
        .unwrap()
}
