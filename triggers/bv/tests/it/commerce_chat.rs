//! Chat (components/chat) end to end: rooms, roles, messages in a per-room
//! order over HTTP and over the WebSocket `/api/chat/live`, history pages,
//! receipts, typing and presence, moderation, limits, and the
//! `chat.message.posted` event naming who was offline. Real PostgreSQL (a
//! database per test), real Redis (a key prefix per test), real sockets.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::auth_support::{self, admin, customer};
use crate::chaos_support::PrivateRedis;
use crate::commerce_order::assert_problem;
use crate::harness::*;
use crate::pg_support::*;
use crate::redis::redis_shared_lock;
use crate::repo_manifest::RepoManifest;
use crate::websocket::{ask_json as ask, next_json as next, open_at, Client};

const JSON: (&str, &str) = ("content-type", "application/json");
/// The send rate the tests run with: low, so the limit is reached fast.
const PER_MINUTE: u32 = 12;

struct Chat {
    app: TestApp,
    db: TestDb,
    _lock: std::fs::File,
}

impl Chat {
    async fn start(tag: &str) -> Self {
        Self::start_on(tag, None).await
    }

    /// With `redis` as the app's Redis instead of the machine's.
    async fn start_on(tag: &str, redis: Option<&str>) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let lock = redis_shared_lock();
        let prefix = format!(
            "bv-it-chat-{tag}-{}-{}:",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let db = TestDb::new(&format!("chat_{tag}")).await;
        let mut manifest = RepoManifest::load()
            .only("commerce-chat", &["chat"])
            .without_rate_limits();
        if let Some(url) = redis {
            manifest = manifest.variable("redis_url", url);
        }
        let manifest = manifest
            .component_variable("chat", "chat_key_prefix", &prefix)
            .component_variable("chat", "chat_messages_per_minute", &PER_MINUTE.to_string())
            .render();
        let app = spawn_app_with(
            &manifest,
            Spawn {
                env: [("SPIN_VARIABLE_DB_URL".into(), db.url())]
                    .into_iter()
                    .chain(auth_support::env())
                    .collect(),
                ..Default::default()
            },
        )
        .await;
        Self {
            app,
            db,
            _lock: lock,
        }
    }

    async fn call(&self, method: &str, path: &str, user: &str, body: Value) -> Reply {
        let auth = if user == "admin" {
            admin()
        } else {
            customer(user)
        };
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        request(
            self.app.addr,
            method,
            &format!("/api/chat{path}"),
            &[auth, JSON],
            body,
        )
        .await
    }

    async fn group(&self, owner: &str, name: &str, members: &[&str]) -> String {
        let r = self
            .call(
                "POST",
                "/rooms",
                owner,
                json!({"kind": "group", "name": name, "members": members}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()["room"]["id"].as_str().unwrap().to_string()
    }

    async fn post(&self, room: &str, user: &str, body: &str) -> Reply {
        self.call(
            "POST",
            &format!("/rooms/{room}/messages"),
            user,
            json!({"body": body}),
        )
        .await
    }

    async fn live(&self, user: &str) -> Client {
        let (_, token) = customer(user);
        let (client, _) = open_at(self.app.addr, "/api/chat/live", &[("authorization", token)])
            .await
            .unwrap_or_else(|e| panic!("{user} could not connect: {e}\n{}", self.app.log()));
        client
    }

    /// The `chat.message.posted` events of a room, in outbox order.
    async fn events(&self, room: &str) -> Vec<Value> {
        self.db
            .client()
            .await
            .query(
                "SELECT (event->'data')::text FROM bv_events.outbox \
                 WHERE type = 'com.bitvelocity.chat.message.posted.v1' AND subject = $1 ORDER BY seq",
                &[&room],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| serde_json::from_str(r.get::<_, &str>(0)).unwrap())
            .collect()
    }
}

/// The next message of `kind`, skipping others.
async fn next_of(client: &mut Client, kind: &str) -> Value {
    loop {
        let m = next(client).await;
        if m["type"] == kind {
            return m;
        }
    }
}

fn seqs(page: &Value) -> Vec<i64> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_group_chats_live_with_history_receipts_and_moderation() {
    let chat = Chat::start("group").await;
    let room = chat.group("erin", "Book club", &["frank"]).await;

    // Someone outside the room does not see it.
    for (method, path) in [
        ("GET", format!("/rooms/{room}")),
        ("GET", format!("/rooms/{room}/messages")),
    ] {
        assert_problem(
            &chat.call(method, &path, "gus", Value::Null).await,
            404,
            "not-found",
        );
    }
    assert_problem(
        &chat.post(&room, "gus", "let me in").await,
        404,
        "not-found",
    );

    // Erin and Frank connect and join; Gus may not join.
    let mut erin = chat.live("erin").await;
    let mut frank = chat.live("frank").await;
    let mut gus = chat.live("gus").await;
    for client in [&mut erin, &mut frank] {
        let joined = ask(client, json!({"type": "join", "roomId": room, "ref": 1})).await;
        assert_eq!(
            joined,
            json!({"type": "joined", "roomId": room, "lastSeq": 0, "ref": 1})
        );
    }
    let refused = ask(&mut gus, json!({"type": "join", "roomId": room})).await;
    assert_eq!(
        (refused["type"].as_str(), refused["status"].as_u64()),
        (Some("error"), Some(404)),
        "{refused}"
    );
    let bad = ask(&mut gus, json!({"type": "shout"})).await;
    assert_eq!(bad["kind"], "malformed-json", "{bad}");

    // Both are online.
    let r = chat
        .call("GET", &format!("/rooms/{room}"), "erin", Value::Null)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let online: Vec<(String, bool)> = r.json()["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["user"].as_str().unwrap().to_string(),
                m["online"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(online, [("erin".into(), true), ("frank".into(), true)]);

    // Frank types; Erin sees it.
    frank
        .send(Message::text(
            json!({"type": "typing", "roomId": room}).to_string(),
        ))
        .await
        .unwrap();
    let typing = next_of(&mut erin, "typing").await;
    assert_eq!(typing["user"], "frank");

    // Erin sends over the socket; both get it. Erin, joined, gets the
    // room's push and then the answer to her command (the push goes out
    // while the command runs).
    let pushed_to_erin = ask(
        &mut erin,
        json!({"type": "send", "roomId": room, "body": "Chapter 3 tonight?", "clientId": "e-1"}),
    )
    .await;
    assert_eq!(pushed_to_erin["type"], "message", "{pushed_to_erin}");
    let sent = next(&mut erin).await;
    assert_eq!(sent["type"], "sent", "{sent}");
    assert_eq!(sent["message"]["seq"], 1);
    assert_eq!(sent["message"], pushed_to_erin["message"]);
    let pushed = next_of(&mut frank, "message").await;
    assert_eq!(pushed["message"]["body"], "Chapter 3 tonight?");
    assert_eq!(pushed["message"]["sender"], "erin");

    // The same clientId again, over HTTP: the same message, nothing new.
    let again = chat
        .call(
            "POST",
            &format!("/rooms/{room}/messages"),
            "erin",
            json!({"body": "Chapter 3 tonight?", "clientId": "e-1"}),
        )
        .await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["seq"], 1);

    // Frank answers three times; Erin gets them in order.
    for text in ["yes", "bringing tea", "see you at 6"] {
        let r = chat.post(&room, "frank", text).await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    for (seq, text) in [(2, "yes"), (3, "bringing tea"), (4, "see you at 6")] {
        let m = next_of(&mut erin, "message").await;
        assert_eq!(
            (m["message"]["seq"].as_i64(), m["message"]["body"].as_str()),
            (Some(seq), Some(text))
        );
    }

    // History, newest first by `before`, oldest first by `after`.
    let page = chat
        .call(
            "GET",
            &format!("/rooms/{room}/messages?limit=2"),
            "erin",
            Value::Null,
        )
        .await
        .json();
    assert_eq!(
        (seqs(&page), &page["next"]),
        (vec![4, 3], &json!({"before": 3}))
    );
    let page = chat
        .call(
            "GET",
            &format!("/rooms/{room}/messages?before=3&limit=2"),
            "erin",
            Value::Null,
        )
        .await
        .json();
    assert_eq!((seqs(&page), &page["next"]), (vec![2, 1], &Value::Null));
    let page = chat
        .call(
            "GET",
            &format!("/rooms/{room}/messages?after=1&limit=2"),
            "frank",
            Value::Null,
        )
        .await
        .json();
    assert_eq!(
        (seqs(&page), &page["next"]),
        (vec![2, 3], &json!({"after": 3}))
    );
    for query in [
        "limit=0",
        "limit=101",
        "before=1&after=1",
        "limit=x",
        "page=2",
        "limit=1&limit=2",
    ] {
        let r = chat
            .call(
                "GET",
                &format!("/rooms/{room}/messages?{query}"),
                "erin",
                Value::Null,
            )
            .await;
        assert_problem(&r, 422, "invalid-parameter");
    }

    // Receipts: Erin has read up to 3 (so received it too); Frank is
    // told; her unread count is 1.
    erin.send(Message::text(
        json!({"type": "read", "roomId": room, "seq": 3}).to_string(),
    ))
    .await
    .unwrap();
    let receipt = next_of(&mut frank, "receipt").await;
    assert_eq!(
        (
            receipt["user"].as_str(),
            receipt["readSeq"].as_i64(),
            receipt["deliveredSeq"].as_i64()
        ),
        (Some("erin"), Some(3), Some(3)),
        "{receipt}"
    );
    let rooms = chat.call("GET", "/rooms", "erin", Value::Null).await.json();
    assert_eq!(rooms["rooms"][0]["unread"], 1, "{rooms}");
    // Receipts never move back nor past the last message.
    let r = chat
        .call(
            "PUT",
            &format!("/rooms/{room}/receipts"),
            "erin",
            json!({"readSeq": 99}),
        )
        .await;
    assert_eq!(
        r.json(),
        json!({"deliveredSeq": 4, "readSeq": 4}),
        "{}",
        r.text()
    );
    let r = chat
        .call(
            "PUT",
            &format!("/rooms/{room}/receipts"),
            "erin",
            json!({"readSeq": 1}),
        )
        .await;
    assert_eq!(r.json()["readSeq"], 4);

    // Bad messages change nothing.
    for (body, field) in [
        (json!({"body": "  "}), "body"),
        (json!({"body": "x".repeat(2001)}), "body"),
        (json!({"body": "hi", "clientId": "no spaces"}), "clientId"),
        (json!({"body": "hi", "color": "red"}), "color"),
    ] {
        let r = chat
            .call("POST", &format!("/rooms/{room}/messages"), "erin", body)
            .await;
        assert_problem(&r, 422, "invalid-field");
        assert_eq!(r.json()["field"], field, "{}", r.text());
    }

    // Moderation: a member cannot delete another's message or add people;
    // the owner names Frank moderator, who adds Gus and mutes him.
    assert_problem(
        &chat
            .call(
                "DELETE",
                &format!("/rooms/{room}/messages/1"),
                "frank",
                Value::Null,
            )
            .await,
        403,
        "forbidden",
    );
    assert_problem(
        &chat
            .call(
                "PUT",
                &format!("/rooms/{room}/members/gus"),
                "frank",
                json!({}),
            )
            .await,
        403,
        "forbidden",
    );
    let r = chat
        .call(
            "PUT",
            &format!("/rooms/{room}/members/frank"),
            "erin",
            json!({"role": "moderator"}),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["role"].as_str()),
        (200, Some("moderator")),
        "{}",
        r.text()
    );
    let r = chat
        .call(
            "PUT",
            &format!("/rooms/{room}/members/gus"),
            "frank",
            json!({}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_problem(
        &chat
            .call(
                "PUT",
                &format!("/rooms/{room}/members/gus"),
                "gus",
                json!({"role": "moderator"}),
            )
            .await,
        403,
        "forbidden",
    );
    assert_problem(
        &chat
            .call(
                "PUT",
                &format!("/rooms/{room}/members/erin"),
                "frank",
                json!({"role": "member"}),
            )
            .await,
        409,
        "conflict",
    );
    let r = chat
        .call(
            "PUT",
            &format!("/rooms/{room}/members/gus/mute"),
            "frank",
            json!({"minutes": 10}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let muted = chat.post(&room, "gus", "hello?").await;
    assert_problem(&muted, 403, "forbidden");
    assert!(muted.json()["mutedUntil"].is_string(), "{}", muted.text());
    assert_problem(
        &chat
            .call(
                "PUT",
                &format!("/rooms/{room}/members/frank/mute"),
                "gus",
                json!({"minutes": 10}),
            )
            .await,
        403,
        "forbidden",
    );
    let r = chat
        .call(
            "DELETE",
            &format!("/rooms/{room}/members/gus/mute"),
            "frank",
            Value::Null,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = chat.post(&room, "gus", "thanks").await;
    assert_eq!(
        (r.status, r.json()["seq"].as_i64()),
        (201, Some(5)),
        "{}",
        r.text()
    );

    // The owner deletes Frank's message: its place stays, its text goes.
    let r = chat
        .call(
            "DELETE",
            &format!("/rooms/{room}/messages/2"),
            "erin",
            Value::Null,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let deleted = next_of(&mut frank, "deleted").await;
    assert_eq!(deleted["seq"], 2);
    let page = chat
        .call(
            "GET",
            &format!("/rooms/{room}/messages?after=1&limit=1"),
            "erin",
            Value::Null,
        )
        .await
        .json();
    assert_eq!(
        (
            &page["messages"][0]["body"],
            &page["messages"][0]["deleted"]
        ),
        (&Value::Null, &json!(true)),
        "{page}"
    );

    // Frank removes Gus, who then sees nothing of the room.
    let r = chat
        .call(
            "DELETE",
            &format!("/rooms/{room}/members/gus"),
            "frank",
            Value::Null,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_problem(
        &chat
            .call(
                "GET",
                &format!("/rooms/{room}/messages"),
                "gus",
                Value::Null,
            )
            .await,
        404,
        "not-found",
    );
    // An administrator reads any room.
    let r = chat
        .call(
            "GET",
            &format!("/rooms/{room}/messages"),
            "admin",
            Value::Null,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Frank leaves; the next message's event names him offline.
    drop(frank);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = chat
            .call("GET", &format!("/rooms/{room}"), "erin", Value::Null)
            .await
            .json();
        if r["members"][1]["online"] == false {
            break;
        }
        assert!(Instant::now() < deadline, "frank still online: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = chat.post(&room, "erin", "Frank, you left your scarf").await;
    assert_eq!(r.status, 201, "{}", r.text());
    let events = chat.events(&room).await;
    let summary: Vec<(i64, String, Value)> = events
        .iter()
        .map(|e| {
            (
                e["seq"].as_i64().unwrap(),
                e["senderId"].as_str().unwrap().to_string(),
                e["offline"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, "erin".into(), json!([])),
            (2, "frank".into(), json!([])),
            (3, "frank".into(), json!([])),
            (4, "frank".into(), json!([])),
            (5, "gus".into(), json!([])),
            (6, "erin".into(), json!(["frank"])),
        ],
        "one event per message, none for the retried send"
    );
    assert_eq!(events[5]["recipients"], json!(["frank"]));
    assert_eq!(events[5]["preview"], "Frank, you left your scarf");
}

#[tokio::test]
async fn direct_rooms_ordering_under_concurrency_limits_and_refusals() {
    let chat = Chat::start("direct").await;

    // One direct room per pair, whoever opens it.
    let r = chat
        .call(
            "POST",
            "/rooms",
            "erin",
            json!({"kind": "direct", "with": "frank"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let direct = r.json()["room"]["id"].as_str().unwrap().to_string();
    let r = chat
        .call(
            "POST",
            "/rooms",
            "frank",
            json!({"kind": "direct", "with": "erin"}),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["room"]["id"].as_str()),
        (200, Some(direct.as_str())),
        "{}",
        r.text()
    );
    assert_problem(
        &chat
            .call(
                "PUT",
                &format!("/rooms/{direct}/members/gus"),
                "erin",
                json!({}),
            )
            .await,
        409,
        "conflict",
    );
    for (body, field) in [
        (json!({"kind": "direct", "with": "erin"}), "with"),
        (json!({"kind": "direct"}), "with"),
        (json!({"kind": "direct", "with": "no spaces"}), "with"),
        (json!({"kind": "channel", "name": "x"}), "kind"),
        (json!({"kind": "group"}), "name"),
        (
            json!({"kind": "group", "name": "x", "members": ["ok", "not ok"]}),
            "members[1]",
        ),
    ] {
        let r = chat.call("POST", "/rooms", "erin", body).await;
        assert_problem(&r, 422, "invalid-field");
        assert_eq!(r.json()["field"], field, "{}", r.text());
    }

    // Without a token, nothing; the socket's path answers 426 without the upgrade.
    let r = request(chat.app.addr, "GET", "/api/chat/rooms", &[], String::new()).await;
    assert_problem(&r, 401, "unauthenticated");
    let r = request(chat.app.addr, "GET", "/api/chat/live", &[], String::new()).await;
    assert_problem(&r, 426, "upgrade-required");
    let r = request(
        chat.app.addr,
        "DELETE",
        "/api/chat/rooms",
        &[customer("erin")],
        String::new(),
    )
    .await;
    assert_problem(&r, 405, "method-not-allowed");
    assert_eq!(r.headers["allow"], "GET, HEAD, POST");
    assert_problem(
        &chat
            .call("GET", "/rooms/not-a-room", "erin", Value::Null)
            .await,
        404,
        "not-found",
    );
    match open_at(chat.app.addr, "/api/chat/live", &[]).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("expected 401, got {:?}", other.map(|_| ())),
    }

    // Six people post four messages each, all at once: 24 messages
    // numbered 1 to 24, no gap, no tie, each person's in their order.
    let people = ["p1", "p2", "p3", "p4", "p5", "p6"];
    let room = chat.group("p1", "Crowd", &people[1..]).await;
    let sends = people.iter().map(|p| {
        let (chat, room) = (&chat, &room);
        async move {
            let mut got = Vec::new();
            for i in 0..4 {
                let r = chat.post(room, p, &format!("{p} #{i}")).await;
                assert_eq!(r.status, 201, "{}", r.text());
                got.push(r.json()["seq"].as_i64().unwrap());
            }
            got
        }
    });
    let per_person = futures::future::join_all(sends).await;
    let mut all: Vec<i64> = per_person.iter().flatten().copied().collect();
    all.sort();
    assert_eq!(all, (1..=24).collect::<Vec<_>>());
    for got in &per_person {
        assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
    }
    let page = chat
        .call(
            "GET",
            &format!("/rooms/{room}/messages?after=0&limit=100"),
            "p1",
            Value::Null,
        )
        .await
        .json();
    assert_eq!(seqs(&page), (1..=24).collect::<Vec<_>>());

    // The per-user rate: past it 429 with Retry-After, and nothing stored.
    let mut limited = None;
    for i in 0..PER_MINUTE + 1 {
        let r = chat.post(&direct, "erin", &format!("ping {i}")).await;
        if r.status == 429 {
            limited = Some((i, r));
            break;
        }
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let (i, r) = limited.expect("never limited");
    assert_eq!(i, PER_MINUTE);
    assert_problem(&r, 429, "rate-limited");
    assert!(r.headers.contains_key("retry-after"), "{:?}", r.headers);
    let page = chat
        .call(
            "GET",
            &format!("/rooms/{direct}/messages?limit=100"),
            "frank",
            Value::Null,
        )
        .await
        .json();
    assert_eq!(seqs(&page).len(), PER_MINUTE as usize);
    // Frank is not limited by Erin's rate.
    assert_eq!(chat.post(&direct, "frank", "calm down").await.status, 201);
}

#[tokio::test]
async fn with_redis_down_sends_are_refused_whole_and_reads_go_on() {
    let mut redis = PrivateRedis::start();
    let chat = Chat::start_on("redis_down", Some(&redis.url())).await;
    let room = chat.group("erin", "Outage", &["frank"]).await;
    assert_eq!(chat.post(&room, "erin", "before").await.status, 201);

    redis.kill();
    // The send rate cannot be counted: refused with 503 and Retry-After,
    // nothing stored, no event.
    let r = chat.post(&room, "frank", "during").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.headers.contains_key("retry-after"), "{:?}", r.headers);
    // Reading needs only Postgres: the history, and the room without
    // presence.
    let page = chat
        .call(
            "GET",
            &format!("/rooms/{room}/messages"),
            "frank",
            Value::Null,
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert_eq!(seqs(&page.json()), [1]);
    let r = chat
        .call("GET", &format!("/rooms/{room}"), "frank", Value::Null)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.json()["members"][0].get("online").is_none(),
        "{}",
        r.text()
    );

    // Back: the next message takes the next seq, no gap, one event each.
    redis.restart();
    let r = chat.post(&room, "frank", "after").await;
    assert_eq!(
        (r.status, r.json()["seq"].as_i64()),
        (201, Some(2)),
        "{}",
        r.text()
    );
    let events = chat.events(&room).await;
    assert_eq!(events.len(), 2);
}
