//! The notifications service (components/notifications) end to end: real
//! checkouts publish order events; the service stores in-app
//! notifications and pushes them to the customer's live WebSocket, and
//! calls each customer's webhook, a real HTTP server here, signed with
//! HMAC-SHA256, retried with backoff while it fails, logged, replayable,
//! and emails through a real SMTP server (aiosmtpd, from PyPI); never
//! twice for one event, even when the events are replayed.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio_tungstenite::tungstenite::Message;

use crate::auth_support::customer;
use crate::commerce_order::{assert_problem, Shop};
use crate::websocket::open_at;

const JSON: (&str, &str) = ("content-type", "application/json");

/// One webhook call as the receiver saw it.
#[derive(Debug, Clone)]
struct Call {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// A webhook receiver: records every call; a path answers 500 for as many
/// calls as `fail` says (then 204).
#[derive(Clone, Default)]
struct Receiver {
    calls: Arc<Mutex<Vec<Call>>>,
    fail: Arc<Mutex<HashMap<String, u32>>>,
}

impl Receiver {
    async fn start(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let me = me.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let me = me.clone();
                            async move {
                                let path = req.uri().path().to_string();
                                let headers = req
                                    .headers()
                                    .iter()
                                    .map(|(k, v)| {
                                        (k.to_string(), v.to_str().unwrap_or("").to_string())
                                    })
                                    .collect();
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                me.calls.lock().unwrap().push(Call {
                                    path: path.clone(),
                                    headers,
                                    body: body.to_vec(),
                                });
                                let mut fail = me.fail.lock().unwrap();
                                let status = match fail.get_mut(&path) {
                                    Some(n) if *n > 0 => {
                                        *n -= 1;
                                        500
                                    }
                                    _ => 204,
                                };
                                let mut response = hyper::Response::new(Full::new(Bytes::new()));
                                *response.status_mut() = status.try_into().unwrap();
                                Ok::<_, Infallible>(response)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        addr
    }

    fn fail(&self, path: &str, times: u32) {
        self.fail.lock().unwrap().insert(path.to_string(), times);
    }

    fn calls(&self, path: &str) -> Vec<Call> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.path == path)
            .cloned()
            .collect()
    }
}

/// The aiosmtpd release the tests run (PyPI), in a virtual environment
/// under `~/.cache/bitvelocity`, installed on first use.
const AIOSMTPD: &str = "aiosmtpd==1.4.6";

/// A real SMTP server (aiosmtpd) that keeps what it receives in a Maildir.
struct MailServer {
    port: u16,
    maildir: tempfile::TempDir,
    child: std::process::Child,
}

impl MailServer {
    fn start() -> Self {
        let home = std::env::var("HOME").unwrap();
        let venv = std::path::Path::new(&home).join(".cache/bitvelocity/venv-aiosmtpd");
        let python = venv.join("bin/python");
        let installed = std::process::Command::new(&python)
            .args(["-m", "aiosmtpd", "--version"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("1.4.6"));
        if !installed {
            let ok = std::process::Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .unwrap()
                .success()
                && std::process::Command::new(venv.join("bin/pip"))
                    .args(["install", "-q", AIOSMTPD])
                    .status()
                    .unwrap()
                    .success();
            assert!(ok, "installing {AIOSMTPD} from PyPI failed");
        }
        let port = bv_test_servers::free_port();
        let maildir = tempfile::tempdir().unwrap();
        let child = std::process::Command::new(&python)
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            // A path that does not exist yet: the handler makes the Maildir.
            .arg(maildir.path().join("mail"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        bv_test_servers::wait_for_port(port, "aiosmtpd");
        Self {
            port,
            maildir,
            child,
        }
    }

    /// Every mail received so far, as text.
    fn mails(&self) -> Vec<String> {
        let dir = self.maildir.path().join("mail/new");
        let mut mails: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                    .collect()
            })
            .unwrap_or_default();
        mails.sort();
        mails
    }
}

impl Drop for MailServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// HMAC-SHA256, written out (RFC 2104) as a check on the service's own.
fn hmac_sha256(key: &[u8], message: &[u8]) -> String {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    let outer = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `call` carries a valid signature made with `secret`.
fn signed_with(call: &Call, secret: &str) -> bool {
    let header = &call.headers["bv-signature"];
    let (t, v1) = header
        .split_once(',')
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
        .unwrap_or_else(|| panic!("bad signature header {header}"));
    let mut message = format!("{t}.").into_bytes();
    message.extend_from_slice(&call.body);
    hmac_sha256(secret.as_bytes(), &message) == v1
}

async fn wait_until<T>(what: &str, shop: &Shop, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}\n{}", shop.app.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn deliveries(shop: &Shop, user: &str) -> Vec<Value> {
    let r = shop
        .call(
            "GET",
            "/api/notifications/deliveries",
            &[customer(user)],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["deliveries"].as_array().unwrap().clone()
}

async fn set_webhook(shop: &Shop, user: &str, url: &str) -> String {
    set_preferences(shop, user, json!({"inApp": true, "webhookUrl": url})).await
}

/// Sets `user`'s preferences; the webhook secret it answers.
async fn set_preferences(shop: &Shop, user: &str, preferences: Value) -> String {
    let r = shop
        .call(
            "PUT",
            "/api/notifications/preferences",
            &[customer(user), JSON],
            &preferences.to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let secret = r.json()["webhookSecret"].as_str().unwrap().to_string();
    assert!(
        secret.starts_with("whsec_") && secret.len() > 40,
        "{secret}"
    );
    secret
}

#[tokio::test]
async fn orders_notify_in_app_and_by_signed_webhooks_once_each() {
    let receiver = Receiver::default();
    let hooks = receiver.start().await;
    let mail = MailServer::start();
    let smtp = format!("smtp://127.0.0.1:{}", mail.port);
    let shop = Shop::start_edited("notify", &["notifications", "live"], |m| {
        m.variable("webhook_allowed_hosts", "http://127.0.0.1:*")
            .variable("smtp_url", &smtp)
            .variable("notification_email_from", "shop@bitvelocity.example")
            .component_variable("notifications", "webhook_max_attempts", "3")
            .trigger_field("postgres", "notifications", "retry_initial_ms", 100)
            .trigger_field("postgres", "notifications", "retry_max_ms", 300)
    })
    .await;
    let mug = shop.product("NT-MUG", 1299, 20).await;

    // Preferences: bad URLs are refused; a good one gets a secret, shown
    // once.
    for url in [
        "ftp://example.com/x",
        "/relative",
        "http://user:pw@example.com/x",
    ] {
        let r = shop
            .call(
                "PUT",
                "/api/notifications/preferences",
                &[customer("erin"), JSON],
                &json!({"inApp": true, "webhookUrl": url}).to_string(),
            )
            .await;
        assert_problem(&r, 422, "invalid-field");
    }
    for email in ["erin", "erin@", "erin @example.com", "<erin@example.com>"] {
        let r = shop
            .call(
                "PUT",
                "/api/notifications/preferences",
                &[customer("erin"), JSON],
                &json!({"inApp": true, "email": email}).to_string(),
            )
            .await;
        assert_problem(&r, 422, "invalid-field");
    }
    let erin_hook = "/hooks/erin";
    let erin_url = format!("http://{hooks}{erin_hook}");
    let secret = set_preferences(
        &shop,
        "erin",
        json!({"inApp": true, "webhookUrl": erin_url, "email": "erin@example.com"}),
    )
    .await;
    let r = shop
        .call(
            "GET",
            "/api/notifications/preferences",
            &[customer("erin")],
            "",
        )
        .await;
    assert_eq!(
        r.json(),
        json!({"inApp": true, "webhookUrl": erin_url, "email": "erin@example.com"})
    );

    // Erin follows her notifications live; her webhook fails twice first.
    let (mut live, _) = open_at(shop.app.addr, "/api/live", &[customer("erin")])
        .await
        .unwrap();
    live.send(Message::text(
        json!({"type": "subscribe", "channel": "notifications"}).to_string(),
    ))
    .await
    .unwrap();
    let subscribed = live.next().await.unwrap().unwrap();
    assert!(
        subscribed.to_text().unwrap().contains("subscribed"),
        "{subscribed:?}"
    );
    receiver.fail(erin_hook, 2);

    shop.add_to_cart("erin", &mug, 1).await;
    let r = shop.checkout("erin", "nt-1", "tok_visa").await;
    assert_eq!(r.status, 201, "{}", r.text());
    let order = r.json()["orderId"].as_str().unwrap().to_string();

    // In-app: pushed live, in order, and stored.
    let mut titles = Vec::new();
    while titles.len() < 2 {
        let m = tokio::time::timeout(Duration::from_secs(20), live.next())
            .await
            .expect("no notification pushed")
            .unwrap()
            .unwrap();
        let Ok(text) = m.to_text() else { continue };
        let v: Value = serde_json::from_str(text).unwrap();
        if v["type"] == "notification" {
            assert_eq!(v["notification"]["data"]["orderId"], order.as_str());
            titles.push(v["notification"]["title"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(
        titles,
        ["Order received: 12.99 EUR", "Payment received: 12.99 EUR"]
    );

    // Webhooks: order.placed took three attempts (two 500s), order.paid
    // one; same delivery id on every attempt, each signed with the secret.
    let log = wait_until("erin's webhooks and emails delivered", &shop, async || {
        let log = deliveries(&shop, "erin").await;
        (log.len() == 4 && log.iter().all(|d| d["status"] == "delivered")).then_some(log)
    })
    .await;
    // Two emails, through the real SMTP server, one per event.
    let mails = mail.mails();
    assert_eq!(mails.len(), 2, "{mails:?}");
    let mut subjects: Vec<&str> = mails
        .iter()
        .map(|m| {
            assert!(m.contains("X-RcptTo: erin@example.com"), "{m}");
            assert!(m.contains("X-MailFrom: shop@bitvelocity.example"), "{m}");
            assert!(m.contains(&order), "{m}");
            m.lines().find_map(|l| l.strip_prefix("Subject: ")).unwrap()
        })
        .collect();
    subjects.sort();
    assert_eq!(
        subjects,
        ["Order received: 12.99 EUR", "Payment received: 12.99 EUR"]
    );
    let log: Vec<Value> = log
        .into_iter()
        .filter(|d| d["channel"] == "webhook")
        .collect();
    let by_kind: HashMap<&str, &Value> = log
        .iter()
        .map(|d| (d["kind"].as_str().unwrap(), d))
        .collect();
    assert_eq!(by_kind["order.placed"]["attempts"], 3, "{log:?}");
    assert_eq!(by_kind["order.paid"]["attempts"], 1, "{log:?}");
    let calls = receiver.calls(erin_hook);
    assert_eq!(calls.len(), 4, "{calls:?}");
    let placed_id = by_kind["order.placed"]["id"].as_str().unwrap();
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.headers["bv-delivery-id"] == placed_id)
            .count(),
        3
    );
    for call in &calls {
        assert!(signed_with(call, &secret), "bad signature on {call:?}");
        assert!(!signed_with(call, "whsec_other"));
        let body: Value = serde_json::from_slice(&call.body).unwrap();
        assert_eq!(body["data"]["orderId"], order.as_str());
    }

    // The inbox, newest first; reading one.
    let r = shop
        .call("GET", "/api/notifications", &[customer("erin")], "")
        .await;
    let inbox = r.json();
    assert_eq!(inbox["unread"], 2, "{inbox}");
    let newest = inbox["notifications"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = shop
        .call(
            "POST",
            &format!("/api/notifications/{newest}/read"),
            &[customer("erin")],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = shop
        .call(
            "POST",
            &format!("/api/notifications/{newest}/read"),
            &[customer("frank")],
            "",
        )
        .await;
    assert_problem(&r, 404, "not-found");
    let inbox = shop
        .call("GET", "/api/notifications", &[customer("erin")], "")
        .await
        .json();
    assert_eq!(inbox["unread"], 1, "{inbox}");

    // Every event delivered again, processed marks forgotten: nothing is
    // stored or sent twice.
    let out = tokio::task::spawn_blocking({
        let url = shop.db.url();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_bv"))
                .args(["events", "replay", "notifications", "--from-offset", "1"])
                .args(["--forget-processed", "--no-wait", "--database", &url])
                .env("RUST_LOG", "warn")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let client = shop.db.client().await;
    wait_until("the replay caught up", &shop, async || {
        let row = client
            .query_one(
                "SELECT count(*) FROM bv_events.processed WHERE consumer = 'notifications'",
                &[],
            )
            .await
            .unwrap();
        let handled: i64 = row.get(0);
        (handled >= 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.calls(erin_hook).len(), 4, "a webhook went twice");
    assert_eq!(mail.mails().len(), 2, "an email went twice");
    let inbox = shop
        .call("GET", "/api/notifications", &[customer("erin")], "")
        .await
        .json();
    assert_eq!(
        inbox["notifications"].as_array().unwrap().len(),
        2,
        "{inbox}"
    );

    // Frank's receiver is down: three attempts, then `failed`; a replay
    // once it is back delivers it. Erin cannot replay Frank's.
    let frank_hook = "/hooks/frank";
    let frank_secret = set_webhook(&shop, "frank", &format!("http://{hooks}{frank_hook}")).await;
    receiver.fail(frank_hook, 1000);
    let r = shop
        .call(
            "POST",
            "/api/carts/me/items",
            &[customer("frank"), JSON],
            &json!({"productId": mug, "quantity": 1}).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = shop.checkout("frank", "nt-2", "tok_visa").await;
    assert_eq!(r.status, 201, "{}", r.text());
    let failed = wait_until("frank's order.placed webhook failed", &shop, async || {
        deliveries(&shop, "frank")
            .await
            .into_iter()
            .find(|d| d["kind"] == "order.placed" && d["status"] == "failed")
    })
    .await;
    assert_eq!(failed["attempts"], 3, "{failed}");
    assert_eq!(failed["lastStatus"], 500, "{failed}");
    let id = failed["id"].as_str().unwrap();
    let r = shop
        .call(
            "POST",
            &format!("/api/notifications/deliveries/{id}/replay"),
            &[customer("erin")],
            "",
        )
        .await;
    assert_problem(&r, 404, "not-found");
    receiver.fail(frank_hook, 0);
    let r = shop
        .call(
            "POST",
            &format!("/api/notifications/deliveries/{id}/replay"),
            &[customer("frank")],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        (r.json()["status"].as_str(), r.json()["attempts"].as_i64()),
        (Some("delivered"), Some(4)),
        "{}",
        r.text()
    );
    // (Frank's order.paid, still being retried, may arrive meanwhile.)
    let replayed: Vec<Call> = receiver
        .calls(frank_hook)
        .into_iter()
        .filter(|c| c.headers["bv-delivery-id"] == id)
        .collect();
    assert_eq!(replayed.len(), 4, "{replayed:?}");
    assert!(replayed.iter().all(|c| signed_with(c, &frank_secret)));

    // Gus turned in-app notifications off: his order leaves none.
    let r = shop
        .call(
            "PUT",
            "/api/notifications/preferences",
            &[customer("gus"), JSON],
            &json!({"inApp": false, "webhookUrl": null}).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    shop.add_to_cart("gus", &mug, 1).await;
    let r = shop.checkout("gus", "nt-3", "tok_visa").await;
    assert_eq!(r.status, 201, "{}", r.text());
    // Gus's two events handled: his inbox stays empty.
    wait_until("gus's events handled", &shop, async || {
        let row = client
            .query_one(
                "SELECT count(*) FROM bv_events.processed p JOIN bv_events.outbox o \
                 ON o.source = p.source AND o.id = p.event_id \
                 WHERE p.consumer = 'notifications' AND o.event->'data'->>'customerId' = 'gus'",
                &[],
            )
            .await
            .unwrap();
        (row.get::<_, i64>(0) >= 2).then_some(())
    })
    .await;
    let inbox = shop
        .call("GET", "/api/notifications", &[customer("gus")], "")
        .await
        .json();
    assert_eq!(inbox, json!({"notifications": [], "unread": 0}));
}
