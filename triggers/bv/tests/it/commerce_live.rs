//! `GET /api/live` (components/live): a customer's WebSocket, authenticated
//! at the handshake, subscribed to their own orders' channels only, gets
//! each order event as the saga and the order's moves publish it.

use std::time::Duration;

use futures::StreamExt;
use serde_json::json;

use crate::auth_support;
use crate::commerce_order::{assert_problem, Shop};
use crate::websocket::{ask_json as ask, next_json as next, open_at, Client};

/// A WebSocket to `/api/live{query}` with `headers`, or the handshake's
/// refusal.
async fn live(
    shop: &Shop,
    query: &str,
    headers: &[(&str, &str)],
) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
    open_at(shop.app.addr, &format!("/api/live{query}"), headers)
        .await
        .map(|(client, _)| client)
}

#[tokio::test]
async fn a_customer_follows_their_own_orders_events_over_a_websocket() {
    let shop = Shop::start_with_more("ws", 0, 30, &["live"]).await;
    let mug = shop.product("WS-MUG", 1299, 5).await;
    shop.add_to_cart("erin", &mug, 1).await;
    let r = shop.checkout("erin", "k-ws", "tok_visa").await;
    assert_eq!(r.status, 201, "{}", r.text());
    let order = r.json()["orderId"].as_str().unwrap().to_string();
    let channel = format!("order:{order}");

    // No token, a forged one, or no upgrade: refused.
    match live(&shop, "", &[]).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("expected 401, got {:?}", other.map(|_| ())),
    }
    match live(&shop, "?access_token=not.a.token", &[]).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("expected 401, got {:?}", other.map(|_| ())),
    }
    let plain = shop.call("GET", "/api/live", &[], "").await;
    assert_problem(&plain, 426, "upgrade-required");

    // Another customer cannot follow Erin's order.
    let mut frank = live(&shop, "", &[auth_support::customer("frank")])
        .await
        .unwrap();
    let refused = ask(&mut frank, json!({"type": "subscribe", "channel": channel})).await;
    assert_eq!(
        (refused["type"].as_str(), refused["status"].as_u64()),
        (Some("error"), Some(404)),
        "{refused}"
    );
    let bad = ask(&mut frank, json!({"type": "shout"})).await;
    assert_eq!(bad["status"], 400, "{bad}");
    assert_eq!(
        ask(&mut frank, json!({"type": "ping"})).await["type"],
        "pong"
    );

    // Erin follows it (the token in the query, as a browser sends it) and
    // sees her cancel arrive.
    let (_, token) = auth_support::customer("erin");
    let token = token.trim_start_matches("Bearer ").to_string();
    let mut erin = live(&shop, &format!("?access_token={token}"), &[])
        .await
        .unwrap();
    let subscribed = ask(&mut erin, json!({"type": "subscribe", "channel": channel})).await;
    assert_eq!(
        subscribed,
        json!({"type": "subscribed", "channel": channel})
    );
    let r = shop
        .call(
            "POST",
            &format!("/api/orders/{order}/cancel"),
            &[auth_support::customer("erin")],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Events the consumer had not sent yet when Erin subscribed come first
    // (in the order written); the cancel is the last.
    let mut last_offset = 0;
    loop {
        let event = next(&mut erin).await;
        assert_eq!(event["type"], "event", "{event}");
        assert_eq!(event["channel"], channel.as_str());
        let offset = event["event"]["offset"].as_u64().unwrap();
        assert!(offset > last_offset, "out of order: {event}");
        last_offset = offset;
        if event["event"]["type"] == "com.bitvelocity.order.cancelled.v1" {
            break;
        }
    }
    // Frank, not subscribed, got nothing.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), frank.next())
            .await
            .is_err(),
        "frank received something"
    );

    // An admin may follow any order.
    let mut ops = live(&shop, "", &[auth_support::admin()]).await.unwrap();
    let subscribed = ask(&mut ops, json!({"type": "subscribe", "channel": channel})).await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
}
