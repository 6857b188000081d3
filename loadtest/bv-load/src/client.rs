//! A keep-alive HTTP/1 connection to `bv`: one per load client, so that a
//! request's latency is the server's answer, not a connect.

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// One connection to the app.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    base: String,
    authority: String,
}

/// An answer: its status and its body.
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body as sent.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON (`null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The body as text, for error messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Connection {
    /// Connects to `base` (`http://host:port`, no path).
    pub async fn open(base: &str) -> anyhow::Result<Self> {
        let uri: hyper::Uri = base.parse().with_context(|| format!("--url {base:?}"))?;
        let authority = uri
            .authority()
            .with_context(|| format!("--url {base:?}: no host"))?
            .to_string();
        let stream = tokio::net::TcpStream::connect(&authority)
            .await
            .with_context(|| format!("connecting to {authority}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .with_context(|| format!("HTTP handshake with {authority}"))?;
        tokio::spawn(connection);
        Ok(Self {
            sender,
            base: base.trim_end_matches('/').to_string(),
            authority,
        })
    }

    /// Sends `method path` with `headers` and, when given, a JSON `body`.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> anyhow::Result<Answer> {
        self.sender
            .ready()
            .await
            .with_context(|| format!("{method} {path}: the connection closed"))?;
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("host", &self.authority);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let bytes = match body {
            Some(body) => {
                request = request.header("content-type", "application/json");
                Bytes::from(body.to_string())
            }
            None => Bytes::new(),
        };
        let response = self
            .sender
            .send_request(request.body(Full::new(bytes))?)
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .with_context(|| format!("{method} {path}: reading the answer"))?
            .to_bytes();
        Ok(Answer { status, body })
    }
}
