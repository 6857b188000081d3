//! Contract tests of the event schemas: each schema is valid (within the
//! supported subset), a realistic sample of each type passes, each kind of
//! violation is rejected naming its field, and no schema changed
//! incompatibly without a version bump (against `schemas/compat.lock.json`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use bv_events::compat::{incompatibilities, shape, Shape};
use bv_events::schema::Schema;
use bv_events::{decode, encode, validate, CloudEvent, EventError, EventType, SCHEMAS};
use serde_json::{json, Value};

fn money(amount: i64) -> Value {
    json!({ "amount": amount, "currency": "EUR" })
}

/// One valid `data` per event type.
fn sample(ty: &str) -> Value {
    match ty {
        "com.bitvelocity.chat.message.posted.v1" => json!({
            "roomId": "r-1", "seq": 7, "senderId": "erin", "preview": "see you at 6",
            "recipients": ["frank", "gus"], "offline": ["gus"]
        }),
        "com.bitvelocity.iot.anomaly.detected.v1" => json!({
            "anomalyId": 3, "deviceId": "thermo-1", "owner": "alice", "metric": "temperature",
            "kind": "spike", "value": 31.5, "score": 9.2, "baseline": 21.0,
            "at": "2026-12-07T10:00:00.000Z"
        }),
        "com.bitvelocity.iot.anomaly.cleared.v1" => json!({
            "anomalyId": 3, "deviceId": "thermo-1", "owner": "alice", "metric": "temperature",
            "kind": "spike", "openedAt": "2026-12-07T10:00:00.000Z", "at": "2026-12-07T10:00:09.000Z"
        }),
        "com.bitvelocity.product.created.v1" => json!({
            "productId": "p-1", "sku": "MUG-RED", "name": "Red mug",
            "description": "350 ml stoneware", "category": "mugs", "price": money(1299),
            "status": "active"
        }),
        "com.bitvelocity.product.updated.v1" => json!({
            "productId": "p-1", "revision": 2,
            "changes": { "price": money(999), "category": "cups", "status": "discontinued" }
        }),
        "com.bitvelocity.product.deleted.v1" => json!({
            "productId": "p-1", "sku": "MUG-RED", "revision": 3
        }),
        "com.bitvelocity.order.placed.v1" => json!({
            "orderId": "o-1", "customerId": "c-1",
            "items": [
                { "productId": "p-1", "sku": "MUG-RED", "quantity": 2, "unitPrice": money(1299) },
                { "productId": "p-2", "sku": "TEA-50", "quantity": 1, "unitPrice": money(450) }
            ],
            "total": money(3048)
        }),
        "com.bitvelocity.order.confirmed.v1" => json!({
            "orderId": "o-1", "customerId": "c-1", "reservationId": "o-1"
        }),
        "com.bitvelocity.order.paid.v1" => json!({
            "orderId": "o-1", "customerId": "c-1", "paymentId": "o-1", "total": money(3048)
        }),
        "com.bitvelocity.order.failed.v1" => json!({
            "orderId": "o-1", "customerId": "c-1", "reason": "card-declined",
            "step": "authorize-payment"
        }),
        "com.bitvelocity.order.cancelled.v1" => json!({
            "orderId": "o-1", "customerId": "c-1", "reason": "saga-timeout",
            "previousStatus": "CONFIRMED"
        }),
        "com.bitvelocity.order.fulfilled.v1" => json!({ "orderId": "o-1", "customerId": "c-1" }),
        "com.bitvelocity.order.expired.v1" => json!({
            "orderId": "o-1", "customerId": "c-1", "status": "CONFIRMED",
            "step": "authorize-payment", "timeoutSeconds": 30
        }),
        "com.bitvelocity.payment.authorized.v1" => json!({
            "paymentId": "pay-1", "orderId": "o-1", "amount": money(3048),
            "provider": "stripe", "authorizationCode": "AUTH-77",
            "authorizedAt": "2026-01-02T03:04:05Z"
        }),
        "com.bitvelocity.payment.declined.v1" => json!({
            "paymentId": "pay-2", "orderId": "o-2", "amount": money(250000),
            "provider": "bitvelocity-simulator", "reason": "amount-limit",
            "declinedAt": "2026-01-02T03:04:05.123Z"
        }),
        "com.bitvelocity.payment.captured.v1" => json!({
            "paymentId": "pay-1", "orderId": "o-1", "amount": money(3048),
            "provider": "bitvelocity-simulator", "authorizationCode": "AUTH-77",
            "capturedAt": "2026-01-02T03:05:00Z"
        }),
        "com.bitvelocity.payment.refunded.v1" => json!({
            "paymentId": "pay-1", "orderId": "o-1", "amount": money(3048),
            "provider": "bitvelocity-simulator", "kind": "void",
            "refundedAt": "2026-01-02T03:06:00Z"
        }),
        "com.bitvelocity.stock.reserved.v1" => json!({
            "reservationId": "r-1", "orderId": "o-1", "warehouseId": "w-east",
            "items": [{ "sku": "MUG-RED", "quantity": 2 }],
            "expiresAt": "2026-01-02T03:19:05+00:00"
        }),
        "com.bitvelocity.stock.released.v1" | "com.bitvelocity.stock.committed.v1" => json!({
            "reservationId": "r-1", "orderId": "o-1", "warehouseId": "main",
            "items": [{ "productId": "p-1", "sku": "MUG-RED", "quantity": 2 }]
        }),
        "com.bitvelocity.stock.restocked.v1" => json!({
            "productId": "p-1", "sku": "MUG-RED", "warehouseId": "main",
            "quantity": 5, "onHand": 12
        }),
        other => panic!("no sample for {other}: add one to tests/contract.rs"),
    }
}

fn event(ty: &str, data: Value) -> CloudEvent {
    CloudEvent::new(ty, "/tests", "s-1", data)
}

#[test]
fn every_schema_is_valid_and_named_after_its_file() {
    assert!(!SCHEMAS.is_empty());
    for s in SCHEMAS {
        let doc: Value = serde_json::from_str(s.text)
            .unwrap_or_else(|e| panic!("{}/{}.json is not JSON: {e}", s.name, s.version));
        let schema =
            Schema::compile(&doc).unwrap_or_else(|e| panic!("{}/{}.json: {e}", s.name, s.version));
        assert_eq!(
            schema.ty().name(),
            "object",
            "{}: data must be an object",
            s.name
        );
        assert_eq!(
            doc["title"],
            s.event_type(),
            "{}/{}.json: title",
            s.name,
            s.version
        );
        let ty = s.event_type();
        let parsed = EventType::parse(&ty).unwrap();
        assert_eq!((parsed.name, parsed.version), (s.name, s.version));
        bv_events::schema(&ty).unwrap();
    }
}

#[test]
fn every_schema_file_is_registered() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        if !entry.file_type().unwrap().is_dir() {
            continue;
        }
        let name = entry.file_name().into_string().unwrap();
        for file in std::fs::read_dir(entry.path()).unwrap() {
            let file = file.unwrap().file_name().into_string().unwrap();
            let version: u32 = file
                .strip_suffix(".json")
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("schemas/{name}/{file}: expected <version>.json"));
            assert!(
                SCHEMAS
                    .iter()
                    .any(|s| s.name == name && s.version == version),
                "schemas/{name}/{file} is not listed in src/registry.rs `schemas!`"
            );
        }
    }
}

#[test]
fn a_sample_of_every_type_passes_and_round_trips() {
    for s in SCHEMAS {
        let ty = s.event_type();
        let sent = event(&ty, sample(&ty));
        validate(&sent).unwrap_or_else(|e| panic!("{ty}: {e}"));
        let json = encode(&sent).unwrap();
        assert_eq!(decode(&json).unwrap(), sent);
    }
}

/// Applies `edit` to the order.placed sample and returns the error.
fn order_error(edit: impl FnOnce(&mut Value)) -> String {
    let ty = "com.bitvelocity.order.placed.v1";
    let mut data = sample(ty);
    edit(&mut data);
    let e = encode(&event(ty, data)).unwrap_err();
    e.to_string()
}

#[test]
fn each_kind_of_violation_names_its_field() {
    type Edit = Box<dyn FnOnce(&mut Value)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|d| d["total"]["amount"] = json!(-5)),
            "data.total.amount: must be an integer ≥ 0",
        ),
        (
            Box::new(|d| d["total"]["amount"] = json!(12.5)),
            "data.total.amount: must be an integer ≥ 0",
        ),
        (
            Box::new(|d| d["total"]["amount"] = json!("1299")),
            "data.total.amount: must be an integer ≥ 0",
        ),
        (
            Box::new(|d| d["items"][1]["quantity"] = json!(0)),
            "data.items[1].quantity: must be an integer ≥ 1",
        ),
        (
            Box::new(|d| {
                d.as_object_mut().unwrap().remove("customerId");
            }),
            "data.customerId: is required",
        ),
        (
            Box::new(|d| d["items"][0]["unitPrice"]["currency"] = json!("EURO")),
            "data.items[0].unitPrice.currency: must be one of",
        ),
        (
            Box::new(|d| d["orderId"] = json!("")),
            "data.orderId: must not be empty",
        ),
        (
            Box::new(|d| d["coupon"] = json!("SPRING")),
            "data.coupon: is not allowed (unknown field)",
        ),
        (
            Box::new(|d| d["items"] = json!([])),
            "data.items: must have at least 1 item(s)",
        ),
        (Box::new(|d| *d = json!([1])), "data: must be an object"),
        (
            Box::new(|d| d["items"] = json!({})),
            "data.items: must be an array",
        ),
    ];
    for (edit, expected) in cases {
        let e = order_error(edit);
        assert!(e.starts_with(expected), "expected `{expected}`, got `{e}`");
    }
    // Strings: date-time format and length.
    let ty = "com.bitvelocity.payment.authorized.v1";
    let mut data = sample(ty);
    data["authorizedAt"] = json!("02/01/2026");
    let e = encode(&event(ty, data)).unwrap_err();
    assert_eq!(e.field(), "data.authorizedAt");
    assert_eq!(
        e.to_string(),
        "data.authorizedAt: must be an RFC 3339 date-time"
    );
    let ty = "com.bitvelocity.product.created.v1";
    let mut data = sample(ty);
    data["sku"] = json!("X".repeat(65));
    let e = encode(&event(ty, data)).unwrap_err();
    assert_eq!(e.to_string(), "data.sku: must be at most 64 characters");
}

#[test]
fn unknown_types_and_bad_envelopes_are_refused_on_both_sides() {
    let e = encode(&event("com.bitvelocity.order.placed.v9", json!({}))).unwrap_err();
    assert_eq!(e.field(), "type");
    assert!(e.to_string().contains("unknown event type"), "{e}");
    assert!(EventType::parse("order.placed.v1").is_none());
    assert!(EventType::parse("com.bitvelocity.order.placed").is_none());
    assert!(EventType::parse("com.bitvelocity.order.placed.v01").is_none());

    // A consumer receiving a well-formed envelope with bad data.
    let ty = "com.bitvelocity.stock.reserved.v1";
    let mut data = sample(ty);
    data["items"][0]["quantity"] = json!(-1);
    let json = event(ty, data).to_json();
    let e = decode(&json).unwrap_err();
    assert!(matches!(e, EventError::Schema(_)));
    assert_eq!(
        e.to_string(),
        "data.items[0].quantity: must be an integer ≥ 1"
    );

    // …and a malformed envelope.
    let mut v: Value = serde_json::from_str(&event(ty, sample(ty)).to_json()).unwrap();
    v["time"] = json!("now");
    let e = decode(&v.to_string()).unwrap_err();
    assert!(matches!(e, EventError::Envelope(_)));
    assert_eq!(e.field(), "time");
}

fn lock_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas/compat.lock.json")
}

fn current_shapes() -> BTreeMap<String, Shape> {
    SCHEMAS
        .iter()
        .map(|s| {
            let schema = Schema::compile(&serde_json::from_str(s.text).unwrap()).unwrap();
            (s.event_type(), shape(&schema))
        })
        .collect()
}

const HOW_TO_UPDATE: &str = "\
An incompatible change needs a new version: copy schemas/<name>/<n>.json to \
<n+1>.json, change the copy, add it to `schemas!` in src/registry.rs, and keep \
publishing the old version until its consumers have moved. To record a \
compatible change (new optional fields) or a new version in the lock, run \
`BV_UPDATE_COMPAT_LOCK=1 cargo test -p bv-events --test contract` and commit \
schemas/compat.lock.json.";

#[test]
fn schemas_stay_compatible_with_the_lock() {
    let current = current_shapes();
    let text = std::fs::read_to_string(lock_path()).unwrap_or_default();
    let locked: BTreeMap<String, Shape> = if text.is_empty() {
        BTreeMap::new()
    } else {
        serde_json::from_str(&text).expect("schemas/compat.lock.json is malformed")
    };
    let mut problems = Vec::new();
    for (ty, old) in &locked {
        match current.get(ty) {
            None => problems.push(format!(
                "{ty}: in the lock but its schema is gone (an event version may only be removed once nothing publishes or consumes it; then remove it from the lock by hand)"
            )),
            Some(new) => problems.extend(
                incompatibilities(old, new)
                    .into_iter()
                    .map(|p| format!("{ty}: {p}")),
            ),
        }
    }
    assert!(
        problems.is_empty(),
        "incompatible schema changes without a version bump:\n  {}\n{HOW_TO_UPDATE}",
        problems.join("\n  ")
    );
    if current != locked {
        if std::env::var_os("BV_UPDATE_COMPAT_LOCK").is_some() {
            let mut text = serde_json::to_string_pretty(&current).unwrap();
            text.push('\n');
            std::fs::write(lock_path(), text).unwrap();
        } else {
            panic!(
                "schemas/compat.lock.json is out of date (the changes are compatible).\n{HOW_TO_UPDATE}"
            );
        }
    }
}

#[test]
fn the_compatibility_rules() {
    let base = json!({
        "type": "object", "required": ["a"],
        "properties": {
            "a": { "type": "string" },
            "b": { "type": "integer" },
            "c": { "type": "array", "items": { "type": "object", "properties": { "d": { "type": "string" } } } }
        }
    });
    let old = shape(&Schema::compile(&base).unwrap());
    let changed = |edit: &dyn Fn(&mut Value)| {
        let mut doc = base.clone();
        edit(&mut doc);
        incompatibilities(&old, &shape(&Schema::compile(&doc).unwrap()))
    };
    assert!(changed(&|_| {}).is_empty());
    assert!(changed(&|d| d["properties"]["e"] = json!({"type": "boolean"})).is_empty());
    assert_eq!(
        changed(&|d| {
            d["properties"].as_object_mut().unwrap().remove("b");
        }),
        ["field `b` was removed"]
    );
    assert_eq!(
        changed(&|d| d["properties"]["c"]["items"]["properties"]["d"] = json!({"type": "number"})),
        ["field `c[].d` changed type from string to number"]
    );
    assert_eq!(
        changed(&|d| d["required"] = json!(["a", "b"])),
        ["optional field `b` became required"]
    );
    assert_eq!(
        changed(&|d| {
            d["properties"]["e"] = json!({"type": "boolean"});
            d["required"] = json!(["a", "e"]);
        }),
        ["new field `e` is required (new fields must be optional)"]
    );
    assert_eq!(
        changed(&|d| d["required"] = json!([])),
        ["required field `a` became optional (consumers rely on it)"]
    );
}
