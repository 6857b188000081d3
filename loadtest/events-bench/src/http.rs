//! A keep-alive HTTP/1 connection that POSTs JSON: one per load client.

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// One connection to the producer.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    uri: hyper::Uri,
    authority: String,
}

impl Connection {
    /// Connects to the host of `url` (`http://host:port/path`).
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let uri: hyper::Uri = url.parse().with_context(|| format!("--url {url:?}"))?;
        let authority = uri
            .authority()
            .with_context(|| format!("--url {url:?}: no host"))?
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
            uri,
            authority,
        })
    }

    /// POSTs `body` as JSON; the status and the response body.
    pub async fn post(&mut self, body: String) -> anyhow::Result<(u16, Bytes)> {
        self.sender.ready().await.context("connection closed")?;
        let request = hyper::Request::post(self.uri.clone())
            .header("host", &self.authority)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}
