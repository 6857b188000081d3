//! The inventory over gRPC, end to end: a tonic client over HTTP/2
//! cleartext (prior knowledge) calls the real `inventory` component
//! through `bv`; reflection lists and describes it; the runtime bounds a
//! call by its `grpc-timeout` and answers its own refusals as gRPC
//! statuses; and the order saga runs the same checkout with its inventory
//! calls over HTTP and over gRPC (`inventory_protocol`). Real PostgreSQL
//! and Redis, as in `commerce_order`.

use std::time::Duration;

use bv_grpc::inventory::inventory_client::InventoryClient;
use bv_grpc::inventory::{
    GetStockRequest, Line, ReservationRef, ReservationStatus, ReserveRequest,
};
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tonic::transport::Channel;
use tonic::Code;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

use crate::auth_support::{self, admin};
use crate::commerce_order::{assert_problem, Shop};
use crate::harness::{probe_app, spawn_app};
use crate::otlp_support::{describe, tracing_env, OtlpReceiver, KIND_CLIENT, KIND_SERVER};

const RESERVE: &str = "/bitvelocity.inventory.v1.Inventory/Reserve";

async fn channel(shop: &Shop) -> Channel {
    Channel::from_shared(format!("http://{}", shop.app.addr))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// `message` with `authorization` metadata.
fn by<T>(authorization: (&str, &str), message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", authorization.1.parse().unwrap());
    request
}

fn reserve(id: &str, product: &str, quantity: i64) -> ReserveRequest {
    ReserveRequest {
        reservation_id: id.into(),
        order_id: format!("order-{id}"),
        items: vec![Line {
            product_id: product.into(),
            quantity,
        }],
    }
}

fn by_ref(id: &str) -> ReservationRef {
    ReservationRef {
        reservation_id: id.into(),
    }
}

/// The problem kind a status carries.
#[track_caller]
fn assert_status(status: &tonic::Status, code: Code, kind: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    let (_, problem) = bv_grpc::status::to_problem(status);
    assert_eq!(
        problem["type"],
        format!("urn:bitvelocity:problem:{kind}"),
        "{problem}"
    );
}

/// The admin `/metrics` line of `method` with `code` in component
/// `component`, if there is one.
async fn grpc_count(shop: &Shop, component: &str, method: &str, code: &str) -> Option<u64> {
    let metrics = shop.app.admin_get("/metrics").await.text();
    let series = format!(
        r#"bv_grpc_server_handled_total{{component="{component}",method="{method}",code="{code}"}} "#
    );
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .map(|n| n.trim().parse().unwrap())
}

#[tokio::test]
async fn inventory_answers_grpc_calls_with_the_http_apis_rules() {
    let shop = Shop::start("grpc_api").await;
    let mug = shop.product("MUG", 1299, 5).await;
    let mut inventory = InventoryClient::new(channel(&shop).await);

    let stock = inventory
        .get_stock(GetStockRequest {
            product_id: mug.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (stock.on_hand, stock.available, stock.sku.as_str()),
        (5, 5, "MUG")
    );
    let missing = inventory
        .get_stock(GetStockRequest {
            product_id: "no-such-product".into(),
        })
        .await
        .unwrap_err();
    assert_status(&missing, Code::NotFound, "not-found");

    // The reservation methods take internal callers or administrators.
    let anonymous = inventory
        .reserve(reserve("r-1", &mug, 2))
        .await
        .unwrap_err();
    assert_status(&anonymous, Code::Unauthenticated, "unauthenticated");
    let customer = inventory
        .reserve(by(auth_support::customer("alice"), reserve("r-1", &mug, 2)))
        .await
        .unwrap_err();
    assert_status(&customer, Code::PermissionDenied, "forbidden");

    let held = inventory
        .reserve(by(admin(), reserve("r-1", &mug, 2)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(held.status(), ReservationStatus::Reserved);
    assert!(!held.replayed);
    assert_eq!(held.items[0].quantity, 2);
    // The same request again holds nothing more.
    let again = inventory
        .reserve(by(admin(), reserve("r-1", &mug, 2)))
        .await
        .unwrap()
        .into_inner();
    assert!(again.replayed);
    assert_eq!(shop.stock(&mug).await["reserved"], 2);

    let short = inventory
        .reserve(by(admin(), reserve("r-2", &mug, 10)))
        .await
        .unwrap_err();
    assert_status(&short, Code::FailedPrecondition, "insufficient-stock");
    let (http_status, problem) = bv_grpc::status::to_problem(&short);
    assert_eq!(http_status, 409);
    assert_eq!(problem["shortages"][0]["available"], 3, "{problem}");
    let zero = inventory
        .reserve(by(admin(), reserve("r-3", &mug, 0)))
        .await
        .unwrap_err();
    assert_status(&zero, Code::InvalidArgument, "invalid-field");
    let reused = inventory
        .reserve(by(admin(), reserve("r-1", &mug, 1)))
        .await
        .unwrap_err();
    assert_status(&reused, Code::InvalidArgument, "idempotency-mismatch");
    // Nothing refused held anything.
    assert_eq!(shop.stock(&mug).await["reserved"], 2);

    let released = inventory
        .release(by(admin(), by_ref("r-1")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(released.status(), ReservationStatus::Released);
    assert_eq!(shop.stock(&mug).await["reserved"], 0);
    let late = inventory
        .commit(by(admin(), by_ref("r-1")))
        .await
        .unwrap_err();
    assert_status(&late, Code::FailedPrecondition, "illegal-transition");
    let nothing = inventory
        .get_reservation(by(admin(), by_ref("r-9")))
        .await
        .unwrap_err();
    assert_status(&nothing, Code::NotFound, "not-found");

    // Counted by method and code.
    assert_eq!(grpc_count(&shop, "inventory", RESERVE, "OK").await, Some(2));
    assert_eq!(
        grpc_count(&shop, "inventory", RESERVE, "FAILED_PRECONDITION").await,
        Some(1)
    );
    assert_eq!(
        grpc_count(&shop, "inventory", RESERVE, "UNAUTHENTICATED").await,
        Some(1)
    );
}

#[tokio::test]
async fn stock_is_watched_live_and_reflection_describes_the_service() {
    let shop = Shop::start("grpc_watch").await;
    let mug = shop.product("MUG", 1299, 5).await;
    let channel = channel(&shop).await;

    let mut watch = InventoryClient::new(channel.clone())
        .watch_stock(GetStockRequest {
            product_id: mug.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.on_hand, 5);
    let r = shop
        .call(
            "POST",
            &format!("/api/inventory/{mug}/restock"),
            &[admin(), ("content-type", "application/json")],
            &json!({ "quantity": 3 }).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let next = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("the change arrives")
        .unwrap()
        .unwrap();
    assert_eq!((next.on_hand, next.available), (8, 8));
    drop(watch);

    // Reflection: one stream, several questions.
    let asks = [
        MessageRequest::ListServices(String::new()),
        MessageRequest::FileContainingSymbol("bitvelocity.inventory.v1.Inventory".into()),
        MessageRequest::FileContainingSymbol("bitvelocity.inventory.v1.Nope".into()),
    ]
    .map(|ask| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(ask),
    });
    let mut answers = ServerReflectionClient::new(channel)
        .server_reflection_info(futures::stream::iter(asks))
        .await
        .unwrap()
        .into_inner();
    let mut next = async || {
        answers
            .next()
            .await
            .unwrap()
            .unwrap()
            .message_response
            .unwrap()
    };
    let MessageResponse::ListServicesResponse(list) = next().await else {
        panic!("not a service list");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains(&"bitvelocity.inventory.v1.Inventory")
            && names.contains(&"grpc.reflection.v1.ServerReflection"),
        "{names:?}"
    );
    let MessageResponse::FileDescriptorResponse(file) = next().await else {
        panic!("not a file");
    };
    let file = String::from_utf8_lossy(&file.file_descriptor_proto[0]).to_string();
    assert!(file.contains("inventory.proto") && file.contains("WatchStock"));
    let MessageResponse::ErrorResponse(error) = next().await else {
        panic!("an unknown symbol is an error response");
    };
    assert_eq!(error.error_code, Code::NotFound as i32);
}

/// A unary gRPC request to `addr`, sent raw over HTTP/2 so the test reads
/// what the server answered (a tonic client enforces deadlines itself too).
async fn raw_call(
    addr: std::net::SocketAddr,
    path: &str,
    timeout: Option<&str>,
) -> http::Response<hyper::body::Incoming> {
    raw_call_with(addr, path, timeout, &[]).await
}

/// [`raw_call`] with one message, `message` (protobuf-encoded).
async fn raw_call_with(
    addr: std::net::SocketAddr,
    path: &str,
    timeout: Option<&str>,
    message: &[u8],
) -> http::Response<hyper::body::Incoming> {
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<bytes::Bytes>>();
    let mut request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(timeout) = timeout {
        request = request.header("grpc-timeout", timeout);
    }
    // gRPC's framing: uncompressed, the length, the message.
    let mut framed = vec![0];
    framed.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(message);
    let request = request.body(Full::new(bytes::Bytes::from(framed))).unwrap();
    client.request(request).await.unwrap()
}

#[tokio::test]
async fn the_callers_deadline_bounds_a_call() {
    // The probe sleeps as long as it is asked: the deadline, not the
    // component's timeout (30 s), ends the call.
    let app = spawn_app(&probe_app("/p/...", "")).await;
    let started = std::time::Instant::now();
    let late = raw_call(app.addr, "/p/sleep?ms=5000", Some("200m")).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(late.status(), 200);
    assert_eq!(late.headers()["content-type"], "application/grpc");
    assert_eq!(late.headers()["grpc-status"], "4", "{:?}", late.headers());
    assert_eq!(
        late.headers()["grpc-message"],
        "component `probe` did not answer within 200ms"
    );
    // With time to spare the component answers.
    let answered = raw_call(app.addr, "/p/sleep?ms=10", Some("10S")).await;
    assert!(answered.headers().get("grpc-status").is_none());
    assert_eq!(answered.status(), 200);
}

#[tokio::test]
async fn the_callers_deadline_ends_a_stream_still_running() {
    let shop = Shop::start("grpc_stream_deadline").await;
    let mug = shop.product("MUG", 1299, 5).await;
    // A GetStockRequest: field 1, the product id.
    let mut message = vec![0x0a, u8::try_from(mug.len()).unwrap()];
    message.extend_from_slice(mug.as_bytes());
    let started = std::time::Instant::now();
    let watched = raw_call_with(
        shop.app.addr,
        "/bitvelocity.inventory.v1.Inventory/WatchStock",
        Some("1S"),
        &message,
    )
    .await;
    assert_eq!(watched.status(), 200);
    assert!(watched.headers().get("grpc-status").is_none());
    let body = tokio::time::timeout(Duration::from_secs(10), watched.into_body().collect())
        .await
        .expect("the stream ends at its deadline")
        .unwrap();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
    let trailers = body.trailers().cloned().expect("trailers");
    assert_eq!(trailers["grpc-status"], "4", "{trailers:?}");
    // The stock was sent before: one message at least.
    let data = body.to_bytes();
    assert!(data.len() > 5 && data[0] == 0, "{data:?}");
    assert_eq!(
        grpc_count(
            &shop,
            "inventory",
            "/bitvelocity.inventory.v1.Inventory/WatchStock",
            "DEADLINE_EXCEEDED"
        )
        .await,
        Some(1)
    );
}

#[tokio::test]
async fn runtime_refusals_of_grpc_calls_are_statuses() {
    let shop = Shop::start("grpc_refusals").await;
    // The component's own answer: NOT_FOUND (trailers-only, as tonic
    // answers an error before any message), counted.
    let answered = raw_call(
        shop.app.addr,
        "/bitvelocity.inventory.v1.Inventory/GetStock",
        Some("10S"),
    )
    .await;
    assert_eq!(
        answered.headers()["grpc-status"],
        "5",
        "{:?}",
        answered.headers()
    );
    let get_stock = "/bitvelocity.inventory.v1.Inventory/GetStock";
    assert_eq!(
        grpc_count(&shop, "inventory", get_stock, "NOT_FOUND").await,
        Some(1)
    );
    // A method the service does not have: UNIMPLEMENTED, counted under
    // `unknown` (the caller names it, not the service).
    let missing = raw_call(
        shop.app.addr,
        "/bitvelocity.inventory.v1.Inventory/Nope",
        None,
    )
    .await;
    assert_eq!(
        missing.headers()["grpc-status"],
        "12",
        "{:?}",
        missing.headers()
    );
    assert_eq!(
        grpc_count(&shop, "inventory", "unknown", "UNIMPLEMENTED").await,
        Some(1)
    );
    // No route: UNIMPLEMENTED from the runtime, not a problem+json 404.
    let unrouted = raw_call(shop.app.addr, "/no.such.Service/Call", None).await;
    assert_eq!(unrouted.headers()["grpc-status"], "12");
    assert_eq!(unrouted.headers()["content-type"], "application/grpc");
}

#[tokio::test]
async fn the_checkout_saga_runs_the_same_over_grpc_and_http() {
    for protocol in ["http", "grpc"] {
        let shop = Shop::start_edited(&format!("saga_{protocol}"), &[], |m| {
            m.variable("inventory_protocol", protocol)
        })
        .await;
        let mug = shop.product("MUG", 1000, 3).await;

        // Paid: the stock is held.
        shop.add_to_cart("alice", &mug, 2).await;
        let r = shop.checkout("alice", "k-1", "tok_visa").await;
        assert_eq!(
            r.status,
            201,
            "{protocol}: {}\n{}",
            r.text(),
            shop.app.log()
        );
        assert_eq!(r.json()["status"], "PAID");
        let paid = r.json()["orderId"].as_str().unwrap().to_string();
        assert_eq!(shop.stock(&mug).await["reserved"], 2, "{protocol}");

        // Not enough left: the same problem whichever protocol carried it.
        shop.add_to_cart("bob", &mug, 2).await;
        let r = shop.checkout("bob", "k-2", "tok_visa").await;
        assert_problem(&r, 409, "insufficient-stock");

        // A declined card: the compensation releases the stock.
        shop.add_to_cart("carol", &mug, 1).await;
        let r = shop.checkout("carol", "k-3", "tok_decline").await;
        assert_problem(&r, 402, "card-declined");
        let stock = shop.stock(&mug).await;
        assert_eq!(
            (stock["available"].as_i64(), stock["reserved"].as_i64()),
            (Some(1), Some(2)),
            "{protocol}"
        );

        // Fulfilment commits the stock.
        let r = shop
            .call(
                "POST",
                &format!("/api/orders/{paid}/fulfil"),
                &[admin()],
                "",
            )
            .await;
        assert_eq!(r.status, 200, "{protocol}: {}", r.text());
        let stock = shop.stock(&mug).await;
        assert_eq!(
            (stock["onHand"].as_i64(), stock["reserved"].as_i64()),
            (Some(1), Some(0)),
            "{protocol}"
        );

        // Which protocol carried the calls.
        let method = |m: &str| format!("/bitvelocity.inventory.v1.Inventory/{m}");
        let counts = [
            grpc_count(&shop, "inventory", &method("Reserve"), "OK").await,
            grpc_count(
                &shop,
                "inventory",
                &method("Reserve"),
                "FAILED_PRECONDITION",
            )
            .await,
            grpc_count(&shop, "inventory", &method("Release"), "OK").await,
            grpc_count(&shop, "inventory", &method("Commit"), "OK").await,
        ];
        let expected = match protocol {
            "grpc" => [Some(2), Some(1), Some(1), Some(1)],
            _ => [None; 4],
        };
        assert_eq!(counts, expected, "{protocol}");
    }
}

#[tokio::test]
async fn a_saga_call_over_grpc_is_a_client_and_a_server_span_of_its_method() {
    let otlp = OtlpReceiver::start().await;
    let shop = Shop::start_edited_with_env(
        "grpc_traced",
        &[],
        |m| m.variable("inventory_protocol", "grpc"),
        tracing_env(&otlp.endpoint()),
    )
    .await;
    let mug = shop.product("MUG", 1000, 3).await;
    shop.add_to_cart("alice", &mug, 1).await;
    let r = shop.checkout("alice", "k-1", "tok_visa").await;
    assert_eq!(r.status, 201, "{}", r.text());

    let is_reserve = |s: &&crate::otlp_support::SpanRecord| {
        s.kind == KIND_SERVER && s.attr_str("rpc.method") == Some("Reserve")
    };
    let spans = otlp
        .wait_for_spans(Duration::from_secs(30), |spans| {
            spans.iter().any(|s| is_reserve(&s))
        })
        .await;
    let server = spans.iter().find(is_reserve).unwrap();
    assert_eq!(server.attr_str("rpc.system"), Some("grpc"));
    assert_eq!(
        server.attr_str("rpc.service"),
        Some("bitvelocity.inventory.v1.Inventory")
    );
    assert_eq!(server.attr_str("bv.component"), Some("inventory"));
    // Its parent: the order's client span of the same call, same trace.
    let client = spans
        .iter()
        .find(|s| s.span_id == server.parent_span_id)
        .unwrap_or_else(|| panic!("no parent of {server:?}:\n{}", describe(&spans)));
    assert_eq!(client.kind, KIND_CLIENT, "{client:?}");
    assert_eq!(client.trace_id, server.trace_id);
    assert_eq!(client.attr_str("bv.component"), Some("order"));
    assert_eq!(client.attr_str("rpc.method"), Some("Reserve"));
    assert_eq!(client.attr_str("rpc.system"), Some("grpc"));
}

/// RFC 9113 deprecates the `Upgrade: h2c` handshake (clients speak HTTP/2
/// with prior knowledge, as gRPC's do): such a request is answered over
/// HTTP/1.1, not refused and not upgraded.
#[tokio::test]
async fn an_h2c_upgrade_request_is_answered_over_http1() {
    let app = spawn_app(&probe_app("/p/...", "")).await;
    let r = crate::harness::request(
        app.addr,
        "GET",
        "/p/sleep?ms=1",
        &[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"),
        ],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "slept");
}
