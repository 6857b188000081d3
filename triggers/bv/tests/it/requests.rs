use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

#[tokio::test]
async fn spin_headers_describe_the_request() {
    let app = spawn_app(&probe_app("/p/...", "")).await;
    let reply = request(
        app.addr,
        "GET",
        "/p/headers?x=1",
        &[
            ("spin-client-addr", "6.6.6.6:666"),
            ("spin-path-info", "/spoofed"),
        ],
        "",
    )
    .await;
    let h = &reply.json()["headers"];
    assert_eq!(
        h["spin-full-url"],
        format!("http://{}/p/headers?x=1", app.addr)
    );
    assert_eq!(
        h["spin-path-info"], "/headers",
        "client-sent spin-* headers must be replaced"
    );
    let client = h["spin-client-addr"].as_str().unwrap();
    assert!(client.starts_with("127.0.0.1:"), "client addr {client}");
    assert_eq!(h["spin-matched-route"], "/p/...");
    assert_eq!(h["spin-component-route"], "/p");
    assert_eq!(h["spin-raw-component-route"], "/p/...");
    assert_eq!(h["spin-base-path"], "/");
}

#[tokio::test]
async fn request_body_is_streamed_to_the_guest() {
    let app = spawn_app(&probe_app("/p/...", "")).await;
    // Send one chunk and keep the body open: only a streaming host lets the
    // guest see that chunk and answer before the body ends.
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(
            b"POST /p/first-chunk HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
        )
        .await
        .unwrap();
    let mut received = Vec::new();
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed");
            received.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&received).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                if body == "5" || body.starts_with("1\r\n5\r\n") {
                    return head.to_string();
                }
            }
        }
    })
    .await
    .expect("no answer while the body was still open: the body is buffered");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn large_body_arrives_whole() {
    let app = spawn_app(&probe_app(
        "/p/...",
        "[component.probe.tool.bv]\nmax_request_body_bytes = 16777216\n",
    ))
    .await;
    let body = vec![7u8; 8 * 1024 * 1024];
    let reply = app.send("POST", "/p/count", body).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "8388608");
}

#[tokio::test]
async fn component_environment_and_files() {
    let extra = r#"environment = { GREETING = "hi there" }
files = ["assets/**/*.txt", { source = "data", destination = "/data" }]
exclude_files = ["assets/private/**"]
"#;
    let app = spawn_app_with(
        &probe_app("/p/...", extra),
        Spawn {
            files: vec![
                ("assets/a.txt".into(), "asset a".into()),
                ("assets/sub/b.txt".into(), "asset b".into()),
                ("assets/private/key.txt".into(), "excluded".into()),
                ("data/c.json".into(), "{\"c\":1}".into()),
                ("secret.txt".into(), "not mounted".into()),
            ],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(app.get("/p/env/GREETING").await.text(), "hi there");
    assert_eq!(
        app.get("/p/env/HOME").await.status,
        404,
        "host environment leaked"
    );
    assert_eq!(
        app.get("/p/file?path=/assets/a.txt").await.text(),
        "asset a"
    );
    assert_eq!(
        app.get("/p/file?path=/assets/sub/b.txt").await.text(),
        "asset b"
    );
    assert_eq!(
        app.get("/p/file?path=/data/c.json").await.text(),
        "{\"c\":1}"
    );
    assert_eq!(app.get("/p/file?path=/secret.txt").await.status, 404);
    assert_eq!(
        app.get("/p/file?path=/assets/private/key.txt").await.status,
        404,
        "exclude_files is honoured"
    );
    assert_eq!(app.get("/p/file?path=/etc/passwd").await.status, 404);
}
