//! Pushes to WebSocket clients through `bv`'s WebSocket interface
//! (`http://bv-websocket.spin.internal`): a room's live members are the
//! connections in its group.

use bytes::Bytes;
use serde_json::Value;
use spin_sdk::http::{FullBody, Request};

const WEBSOCKET: &str = "http://bv-websocket.spin.internal";

async fn call(method: &str, path: &str, body: Option<&Value>) -> Result<u16, String> {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("{WEBSOCKET}{path}"));
    let bytes = match body {
        Some(body) => {
            request = request.header("content-type", "application/json");
            Bytes::from(body.to_string())
        }
        None => Bytes::new(),
    };
    let request = request
        .body(FullBody::new(bytes))
        .map_err(|e| e.to_string())?;
    let response = spin_sdk::http::send(request)
        .await
        .map_err(|e| format!("the WebSocket interface: {e:?}"))?;
    Ok(response.status().as_u16())
}

/// Sends `message` to every connection in `group`, in every `bv` process.
/// A failure is logged, not answered: what was pushed is also stored, and
/// clients catch up from the history.
pub async fn to_group(group: &str, message: &Value) {
    match call("POST", &format!("/groups/{group}"), Some(message)).await {
        Ok(202) => {}
        Ok(status) => {
            eprintln!("chat: pushing to {group}: the WebSocket interface answered {status}")
        }
        Err(e) => eprintln!("chat: pushing to {group}: {e}"),
    }
}

/// Puts `connection` in `group` (`PUT`) or takes it out (`DELETE`).
pub async fn membership(method: &str, connection: &str, group: &str) -> Result<(), String> {
    match call(
        method,
        &format!("/connections/{connection}/groups/{group}"),
        None,
    )
    .await?
    {
        204 => Ok(()),
        // The connection is gone: nothing to take it out of.
        404 if method == "DELETE" => Ok(()),
        status => Err(format!("the WebSocket interface answered {status}")),
    }
}
