//! `bv ws`: a WebSocket client for trying the platform's WebSocket
//! endpoints from a shell (curl has no WebSocket): each line of stdin is
//! sent as a text message, each message received is printed as a line.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncBufReadExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::{Error, Message};

/// `bv ws`.
#[derive(Parser)]
pub struct WsArgs {
    /// The endpoint, e.g. ws://127.0.0.1:3000/api/chat/live.
    url: String,
    /// A handshake header, `name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    headers: Vec<String>,
    /// Close after receiving this many messages (stdin ending does not
    /// close then).
    #[arg(long, value_name = "N")]
    messages: Option<usize>,
    /// Without `--messages`: after stdin ends, close once nothing arrived
    /// for this long.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    linger_ms: u64,
    /// Give up (exit 1) after this long in all.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    timeout: u64,
}

fn header(raw: &str) -> anyhow::Result<(HeaderName, HeaderValue)> {
    let (name, value) = raw
        .split_once(':')
        .with_context(|| format!("header `{raw}`: expected `name: value`"))?;
    Ok((
        HeaderName::from_bytes(name.trim().as_bytes())
            .with_context(|| format!("header `{raw}`: bad name"))?,
        HeaderValue::from_str(value.trim())
            .with_context(|| format!("header `{raw}`: bad value"))?,
    ))
}

/// Runs `bv ws`; the exit code.
pub fn run(args: WsArgs) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let timeout = Duration::from_secs(args.timeout);
    runtime.block_on(async {
        match tokio::time::timeout(timeout, session(&args)).await {
            Ok(result) => result,
            Err(_) => bail!("no end after {} s (--timeout)", args.timeout),
        }
    })
}

async fn session(args: &WsArgs) -> anyhow::Result<i32> {
    let mut request = args
        .url
        .as_str()
        .into_client_request()
        .with_context(|| format!("`{}` is not a ws:// URL", args.url))?;
    for raw in &args.headers {
        let (name, value) = header(raw)?;
        request.headers_mut().insert(name, value);
    }
    let uri = request.uri();
    if uri.scheme_str() != Some("ws") {
        bail!(
            "`{}`: only ws:// (plain) endpoints; TLS is the job of a proxy in front",
            args.url
        );
    }
    let address = format!(
        "{}:{}",
        uri.host().unwrap_or("127.0.0.1"),
        uri.port_u16().unwrap_or(80)
    );
    let tcp = tokio::net::TcpStream::connect(&address)
        .await
        .with_context(|| format!("connecting to {address}"))?;
    let mut socket = match tokio_tungstenite::client_async(request, tcp).await {
        Ok((socket, _)) => socket,
        Err(Error::Http(response)) => {
            let body = response
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            eprintln!("the handshake was refused: {}", response.status());
            if !body.is_empty() {
                println!("{body}");
            }
            return Ok(1);
        }
        Err(e) => return Err(e).with_context(|| format!("connecting to {}", args.url)),
    };
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let mut received = 0;
    let linger = Duration::from_millis(args.linger_ms);
    loop {
        if args.messages.is_some_and(|n| received >= n) {
            break;
        }
        let idle = !stdin_open && args.messages.is_none();
        tokio::select! {
            line = lines.next_line(), if stdin_open => match line? {
                Some(line) if line.trim().is_empty() => {}
                Some(line) => socket.send(Message::text(line)).await?,
                None => stdin_open = false,
            },
            message = socket.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    println!("{text}");
                    received += 1;
                }
                Some(Ok(Message::Binary(bytes))) => {
                    println!("{}", String::from_utf8_lossy(&bytes));
                    received += 1;
                }
                Some(Ok(Message::Close(frame))) => {
                    if let Some(frame) = frame {
                        eprintln!("closed by the server: {} {}", frame.code, frame.reason);
                    }
                    return Ok(0);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e).context("the connection failed"),
                None => return Ok(0),
            },
            _ = tokio::time::sleep(linger), if idle => break,
        }
    }
    let _ = socket.close(None).await;
    Ok(0)
}
