//! Authentication and authorization end to end: the `auth` component
//! (accounts, login, refresh-token rotation with reuse detection, logout,
//! JWKS, key rotation) and every protected service checking tokens itself
//! (a suite of bad tokens, 401 against 403, ownership between customers,
//! the saga's internal routes closed to outside callers). Real PostgreSQL
//! (a database per test) and Redis (a key prefix per test).

use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::auth_support::{self as keys, b64, KID, KID_2, SEED, SEED_2, STRANGER_SEED};
use crate::harness::*;
use crate::pg_support::*;
use crate::redis::redis_shared_lock;
use crate::repo_manifest::{RepoManifest, CHECKOUT};

const JSON: (&str, &str) = ("content-type", "application/json");

/// A demo product (migration `0002_demo_catalog`) with demo stock.
const MUG: &str = "5eed0000-0000-4000-8000-000000000001";

/// The auth component and every service a checkout touches.
fn manifest(prefix: &str) -> String {
    RepoManifest::load()
        .only("auth", &[["auth"].as_slice(), &CHECKOUT[..6]].concat())
        .without_rate_limits()
        .trigger_setting("postgres", "poll_interval_ms", 100)
        .component_variable("auth", "login_key_prefix", prefix)
        .component_variable("cart", "cart_ttl_seconds", "3600")
        .component_variable("cart", "cart_key_prefix", prefix)
        .component_variable("order", "breaker_key_prefix", prefix)
        .render()
}

/// Which keys an app signs with and trusts, and who is an admin.
struct Keys {
    signing: Vec<(&'static str, [u8; 32])>,
    public: Vec<(&'static str, [u8; 32])>,
    admins: &'static str,
}

impl Default for Keys {
    fn default() -> Self {
        Self {
            signing: vec![(KID, SEED)],
            public: vec![(KID, SEED)],
            admins: "",
        }
    }
}

struct Shop {
    app: TestApp,
    db: TestDb,
    prefix: String,
    _lock: std::fs::File,
}

impl Shop {
    async fn start(tag: &str, keys: Keys) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let lock = redis_shared_lock();
        let prefix = format!(
            "bv-it-auth-{tag}-{}-{}:",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let db = TestDb::new(&format!("auth_{tag}")).await;
        let app = Self::spawn(&db, &prefix, keys).await;
        Self {
            app,
            db,
            prefix,
            _lock: lock,
        }
    }

    async fn spawn(db: &TestDb, prefix: &str, keys: Keys) -> TestApp {
        spawn_app_with(
            &manifest(prefix),
            Spawn {
                env: vec![
                    ("SPIN_VARIABLE_DB_URL".into(), db.url()),
                    (
                        "SPIN_VARIABLE_AUTH_SIGNING_KEYS".into(),
                        keys::signing_keys(&keys.signing),
                    ),
                    (
                        "SPIN_VARIABLE_AUTH_PUBLIC_KEYS".into(),
                        keys::public_keys(&keys.public),
                    ),
                    ("SPIN_VARIABLE_AUTH_ADMIN_EMAILS".into(), keys.admins.into()),
                ],
                ..Default::default()
            },
        )
        .await
    }

    /// Stops the app and starts it again, on the same database, with `keys`.
    async fn restart(&mut self, keys: Keys) {
        self.app.kill();
        self.app = Self::spawn(&self.db, &self.prefix, keys).await;
    }

    async fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        request(self.app.addr, method, path, headers, body.to_string()).await
    }

    async fn post(&self, path: &str, body: Value) -> Reply {
        self.call("POST", path, &[JSON], &body.to_string()).await
    }

    async fn register(&self, email: &str, password: &str) -> Reply {
        crate::suite_secrets::used(password);
        self.post(
            "/api/auth/register",
            json!({ "email": email, "password": password }),
        )
        .await
    }

    async fn login(&self, email: &str, password: &str) -> Reply {
        crate::suite_secrets::used(password);
        self.post(
            "/api/auth/login",
            json!({ "email": email, "password": password }),
        )
        .await
    }

    async fn refresh(&self, refresh_token: &str) -> Reply {
        crate::suite_secrets::used(refresh_token);
        self.post(
            "/api/auth/refresh",
            json!({ "refreshToken": refresh_token }),
        )
        .await
    }

    /// Registers `email` and logs in: the token answer.
    async fn session(&self, email: &str, password: &str) -> Value {
        let r = self.register(email, password).await;
        assert_eq!(r.status, 201, "{}", r.text());
        let r = self.login(email, password).await;
        assert_eq!(r.status, 200, "{}\n{}", r.text(), self.app.log());
        let tokens = r.json();
        for token in ["accessToken", "refreshToken"] {
            crate::suite_secrets::used(tokens[token].as_str().unwrap_or_default());
        }
        tokens
    }

    /// A GET with `Authorization: Bearer <token>`.
    async fn get_as(&self, token: &str, path: &str) -> Reply {
        crate::suite_secrets::used(token);
        let auth = format!("Bearer {token}");
        self.call("GET", path, &[("authorization", &auth)], "")
            .await
    }

    async fn send_as(&self, token: &str, method: &str, path: &str, body: Value) -> Reply {
        crate::suite_secrets::used(token);
        let auth = format!("Bearer {token}");
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        self.call(method, path, &[("authorization", &auth), JSON], &body)
            .await
    }

    async fn query_one(&self, sql: &str) -> tokio_postgres::Row {
        self.db.client().await.query_one(sql, &[]).await.unwrap()
    }
}

#[track_caller]
fn assert_problem(r: &Reply, status: u16, kind: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.headers["content-type"], "application/problem+json");
    assert_eq!(
        r.json()["type"],
        format!("urn:bitvelocity:problem:{kind}"),
        "{}",
        r.text()
    );
}

/// 401 `invalid-token` with RFC 6750's challenge.
#[track_caller]
fn assert_invalid_token(r: &Reply, what: &str) {
    assert_eq!(r.status, 401, "{what}: {}", r.text());
    assert_eq!(
        r.json()["type"],
        "urn:bitvelocity:problem:invalid-token",
        "{what}: {}",
        r.text()
    );
    assert_eq!(
        r.headers["www-authenticate"], "Bearer error=\"invalid_token\"",
        "{what}"
    );
}

/// The JSON of a token's header and claims.
fn decode(token: &str) -> (Value, Value) {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    let part = |p: &str| serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap();
    (part(parts[0]), part(parts[1]))
}

fn text(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

#[tokio::test]
async fn accounts_sessions_rotation_and_the_jwks() {
    let shop = Shop::start("flow", Keys::default()).await;

    // Register: normalized email, customer role; a duplicate is 409 (any
    // case); a weak password or a malformed email is 422 naming the field.
    let r = shop
        .register("Alice@Example.com", "amber lantern quietly 42")
        .await;
    assert_eq!(r.status, 201, "{}\n{}", r.text(), shop.app.log());
    let account = r.json();
    assert_eq!(account["email"], "alice@example.com");
    assert_eq!(account["role"], "customer");
    let user = text(&account["userId"]);
    assert_problem(
        &shop
            .register("alice@EXAMPLE.com", "another good passphrase")
            .await,
        409,
        "email-taken",
    );
    for (email, password, field) in [
        ("bob@example.com", "short", "password"),
        ("bob@example.com", "password-password-1", "password"),
        ("bob@example.com", "bob is my name, 2026!", "password"),
        ("not-an-email", "amber lantern quietly 42", "email"),
    ] {
        let r = shop.register(email, password).await;
        assert_problem(&r, 422, "invalid-field");
        assert_eq!(r.json()["field"], field, "{email} {password}");
        assert!(
            !r.text().contains(password),
            "the answer echoes the password"
        );
    }

    // Login: a wrong password and an unknown email answer the same.
    let wrong = shop
        .login("alice@example.com", "amber lantern quietly 43")
        .await;
    let unknown = shop
        .login("nobody@example.com", "amber lantern quietly 42")
        .await;
    assert_problem(&wrong, 401, "invalid-credentials");
    assert_eq!(wrong.json(), unknown.json());
    assert_eq!(wrong.headers["www-authenticate"], "Bearer");

    let r = shop
        .login("ALICE@example.com", "amber lantern quietly 42")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.headers["cache-control"], "no-store");
    let tokens = r.json();
    assert_eq!(tokens["tokenType"], "Bearer");
    assert_eq!(tokens["expiresIn"], 900);
    assert_eq!(tokens["userId"], user.as_str());
    let access = text(&tokens["accessToken"]);
    let refresh = text(&tokens["refreshToken"]);
    let (header, claims) = decode(&access);
    assert_eq!(header, json!({ "alg": "EdDSA", "typ": "JWT", "kid": KID }));
    assert_eq!(claims["sub"], user.as_str());
    assert_eq!(claims["role"], "customer");
    assert_eq!(claims["iss"], keys::ISSUER);
    assert_eq!(claims["aud"], keys::AUDIENCE);
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(lifetime, 900);
    assert!((claims["iat"].as_i64().unwrap() - keys::now()).abs() < 60);
    assert!(!text(&claims["jti"]).is_empty());

    // The token opens the customer's routes.
    let orders = shop.get_as(&access, "/api/orders").await;
    assert_eq!(orders.status, 200, "{}", orders.text());
    assert_eq!(orders.json()["orders"], json!([]));

    // The JWKS: the public half of the signing key, nothing private.
    let jwks = shop.call("GET", "/api/auth/jwks", &[], "").await;
    assert_eq!(jwks.status, 200, "{}", jwks.text());
    assert!(jwks.headers["cache-control"]
        .to_str()
        .unwrap()
        .starts_with("public"));
    let expected: Value = serde_json::from_str(&keys::public_keys(&[(KID, SEED)])).unwrap();
    assert_eq!(jwks.json(), expected);
    assert!(!jwks.text().contains(&b64(SEED)));

    // Refresh rotates: a new pair, and the used refresh token is retired.
    let r = shop.refresh(&refresh).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let second = r.json();
    let refresh_2 = text(&second["refreshToken"]);
    assert_ne!(refresh_2, refresh);
    assert_ne!(text(&second["accessToken"]), access);
    assert_eq!(
        shop.get_as(&text(&second["accessToken"]), "/api/orders")
            .await
            .status,
        200
    );
    let r = shop.refresh(&refresh_2).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let refresh_3 = text(&r.json()["refreshToken"]);

    // Reuse of a retired token revokes the whole session: the current
    // token of it stops working too.
    assert_problem(&shop.refresh(&refresh).await, 401, "invalid-refresh-token");
    assert_problem(
        &shop.refresh(&refresh_3).await,
        401,
        "invalid-refresh-token",
    );
    assert_problem(&shop.refresh("made-up").await, 401, "invalid-refresh-token");

    // Logout ends a session; other sessions live on.
    let a = text(
        &shop
            .login("alice@example.com", "amber lantern quietly 42")
            .await
            .json()["refreshToken"],
    );
    let b = text(
        &shop
            .login("alice@example.com", "amber lantern quietly 42")
            .await
            .json()["refreshToken"],
    );
    let r = shop
        .post("/api/auth/logout", json!({ "refreshToken": a }))
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_problem(&shop.refresh(&a).await, 401, "invalid-refresh-token");
    assert_eq!(shop.refresh(&b).await.status, 200);
    let r = shop
        .post("/api/auth/logout", json!({ "refreshToken": "unknown" }))
        .await;
    assert_eq!(r.status, 204);

    // Only hashes are stored: argon2id for the password, SHA-256 for
    // refresh tokens.
    let row = shop
        .query_one("SELECT password_hash FROM auth.users WHERE email = 'alice@example.com'")
        .await;
    let hash: String = row.get(0);
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    assert!(!hash.contains("amber"));
    let row = shop
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE token_hash = $$x$$) FROM auth.refresh_tokens",
        )
        .await;
    assert!(row.get::<_, i64>(0) >= 6);
    let stored: Vec<String> = shop
        .db
        .client()
        .await
        .query("SELECT token_hash FROM auth.refresh_tokens", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!stored.contains(&refresh));
    let sha = Sha256::digest(refresh.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    assert!(stored.contains(&sha));

    // Wrong methods and paths.
    let r = shop.call("GET", "/api/auth/login", &[], "").await;
    assert_problem(&r, 405, "method-not-allowed");
    assert_eq!(r.headers["allow"], "POST");
    assert_problem(
        &shop.call("GET", "/api/auth/nope", &[], "").await,
        404,
        "not-found",
    );
}

#[tokio::test]
async fn admins_are_the_configured_emails() {
    let shop = Shop::start(
        "admins",
        Keys {
            admins: "ops@shop.example, second@shop.example",
            ..Keys::default()
        },
    )
    .await;
    let r = shop
        .register("Ops@Shop.example", "tidy ledger morning 77")
        .await;
    assert_eq!(r.json()["role"], "admin", "{}", r.text());
    let admin = shop
        .session("second@shop.example", "tidy ledger evening 78")
        .await;
    assert_eq!(admin["role"], "admin");
    let admin = text(&admin["accessToken"]);
    assert_eq!(decode(&admin).1["role"], "admin");
    let customer = text(
        &shop
            .session("carol@example.com", "tidy ledger evening 79")
            .await["accessToken"],
    );

    // The admin changes the catalogue; the customer may not.
    let product = json!({
        "sku": "AUTH-1", "name": "Admin's mug", "category": "mugs",
        "price": { "amount": 999, "currency": "EUR" }
    });
    assert_problem(
        &shop
            .send_as(&customer, "POST", "/api/products", product.clone())
            .await,
        403,
        "forbidden",
    );
    let r = shop.send_as(&admin, "POST", "/api/products", product).await;
    assert_eq!(r.status, 201, "{}", r.text());
}

#[tokio::test]
async fn key_rotation_keeps_issued_tokens_valid_until_the_key_is_retired() {
    let mut shop = Shop::start("rotation", Keys::default()).await;
    let first = shop
        .session("dave@example.com", "silver kettle singing 5")
        .await;
    let old_access = text(&first["accessToken"]);
    assert_eq!(decode(&old_access).0["kid"], KID);

    // A new key signs; the old one still verifies.
    let rotating = || Keys {
        signing: vec![(KID_2, SEED_2), (KID, SEED)],
        public: vec![(KID_2, SEED_2), (KID, SEED)],
        admins: "",
    };
    shop.restart(rotating()).await;
    assert_eq!(shop.get_as(&old_access, "/api/orders").await.status, 200);
    let r = shop.refresh(&text(&first["refreshToken"])).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let new_access = text(&r.json()["accessToken"]);
    assert_eq!(decode(&new_access).0["kid"], KID_2);
    assert_eq!(shop.get_as(&new_access, "/api/orders").await.status, 200);
    let kids: Vec<Value> = shop.call("GET", "/api/auth/jwks", &[], "").await.json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].clone())
        .collect();
    assert_eq!(kids, [json!(KID_2), json!(KID)]);

    // Once the old key is retired, its tokens stop working.
    shop.restart(Keys {
        signing: vec![(KID_2, SEED_2)],
        public: vec![(KID_2, SEED_2)],
        admins: "",
    })
    .await;
    assert_invalid_token(
        &shop.get_as(&old_access, "/api/orders").await,
        "a token of a retired key",
    );
    assert_eq!(shop.get_as(&new_access, "/api/orders").await.status, 200);
}

/// HMAC-SHA256, as someone forging an HS256 token would compute it.
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let inner = Sha256::new()
        .chain_update(k.map(|b| b ^ 0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(k.map(|b| b ^ 0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

#[tokio::test]
async fn bad_tokens_are_refused_by_every_protected_service() {
    let shop = Shop::start("badtokens", Keys::default()).await;
    let good = keys::token("mallory", "customer");
    let parts: Vec<String> = good.split('.').map(str::to_string).collect();
    let now = keys::now();
    let with = |changes: Value| {
        let mut c = keys::claims("mallory", "customer");
        for (k, v) in changes.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let jwk = serde_json::from_str::<Value>(&keys::public_keys(&[(KID, STRANGER_SEED)])).unwrap()
        ["keys"][0]
        .clone();
    let hs256 = {
        let header = json!({ "alg": "HS256", "typ": "JWT", "kid": KID });
        let input = format!(
            "{}.{}",
            b64(header.to_string()),
            b64(keys::claims("mallory", "admin").to_string())
        );
        // The key confusion: the public key (the JWKS member, raw and as
        // JSON) used as the HMAC secret.
        let public = keys::public_keys(&[(KID, SEED)]);
        let x = serde_json::from_str::<Value>(&public).unwrap()["keys"][0]["x"].clone();
        let raw = {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(x.as_str().unwrap())
                .unwrap()
        };
        [raw, public.into_bytes()]
            .map(|secret| format!("{input}.{}", b64(hmac_sha256(&secret, input.as_bytes()))))
    };
    let mut flipped = parts[2].clone().into_bytes();
    flipped[20] = if flipped[20] == b'A' { b'B' } else { b'A' };
    let cases: Vec<(&str, String)> = vec![
        ("not a JWT", "not-a-token".into()),
        ("empty parts", "..".into()),
        (
            "bad base64",
            format!("{}.{}.{}!", parts[0], parts[1], parts[2]),
        ),
        (
            "JSON that is not a header",
            format!("{}.{}.{}", b64("[1,2]"), parts[1], parts[2]),
        ),
        (
            "tampered payload",
            format!(
                "{}.{}.{}",
                parts[0],
                b64(keys::claims("mallory", "admin").to_string()),
                parts[2]
            ),
        ),
        (
            "tampered signature",
            format!(
                "{}.{}.{}",
                parts[0],
                parts[1],
                String::from_utf8(flipped).unwrap()
            ),
        ),
        (
            "expired",
            keys::sign(
                &keys::header(KID),
                &with(json!({ "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600 })),
                &SEED,
            ),
        ),
        (
            "not yet valid",
            keys::sign(
                &keys::header(KID),
                &with(json!({ "iat": now + 3600, "nbf": now + 3600, "exp": now + 7200 })),
                &SEED,
            ),
        ),
        (
            "wrong audience",
            keys::sign(
                &keys::header(KID),
                &with(json!({ "aud": "urn:other:api" })),
                &SEED,
            ),
        ),
        (
            "wrong issuer",
            keys::sign(
                &keys::header(KID),
                &with(json!({ "iss": "urn:evil:auth" })),
                &SEED,
            ),
        ),
        (
            "unknown role",
            keys::sign(&keys::header(KID), &with(json!({ "role": "root" })), &SEED),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(json!({ "alg": "none", "typ": "JWT", "kid": KID }).to_string()),
                b64(keys::claims("mallory", "admin").to_string())
            ),
        ),
        ("HS256 keyed with the public key", hs256[0].clone()),
        ("HS256 keyed with the JWK", hs256[1].clone()),
        (
            "unknown kid",
            keys::sign(
                &keys::header("nope"),
                &keys::claims("mallory", "customer"),
                &SEED,
            ),
        ),
        (
            "another key under a known kid",
            keys::sign(
                &keys::header(KID),
                &keys::claims("mallory", "admin"),
                &STRANGER_SEED,
            ),
        ),
        (
            "a key embedded in the header",
            keys::sign(
                &json!({ "alg": "EdDSA", "typ": "JWT", "kid": KID, "jwk": jwk }),
                &keys::claims("mallory", "admin"),
                &STRANGER_SEED,
            ),
        ),
        (
            "a key URL in the header",
            keys::sign(
                &json!({ "alg": "EdDSA", "typ": "JWT", "kid": KID, "jku": "http://127.0.0.1:1/jwks" }),
                &keys::claims("mallory", "admin"),
                &SEED,
            ),
        ),
    ];
    // A customer route (order), a customer route chained to nothing
    // (cart), and an administrator's route (product).
    for (what, token) in &cases {
        for path in ["/api/orders", "/api/carts/me"] {
            assert_invalid_token(
                &shop.get_as(token, path).await,
                &format!("{what} on {path}"),
            );
        }
        let r = shop
            .send_as(
                token,
                "DELETE",
                &format!("/api/products/{MUG}"),
                Value::Null,
            )
            .await;
        assert_invalid_token(&r, &format!("{what} on DELETE /api/products"));
    }
    // The same token, correct, passes.
    assert_eq!(shop.get_as(&good, "/api/orders").await.status, 200);

    // No token, or another scheme: 401 `unauthenticated`, `Bearer` challenge.
    for headers in [vec![], vec![("authorization", "Basic YWxpY2U6cHc=")]] {
        let r = shop.call("GET", "/api/orders", &headers, "").await;
        assert_problem(&r, 401, "unauthenticated");
        assert_eq!(r.headers["www-authenticate"], "Bearer");
    }
    // The old placeholder headers mean nothing.
    let r = shop
        .call(
            "DELETE",
            &format!("/api/products/{MUG}"),
            &[("x-bv-role", "admin"), ("x-bv-customer", "alice")],
            "",
        )
        .await;
    assert_problem(&r, 401, "unauthenticated");

    // A valid customer token on an administrator's route: 403.
    for (method, path, body) in [
        ("DELETE", format!("/api/products/{MUG}"), Value::Null),
        (
            "POST",
            format!("/api/inventory/{MUG}/restock"),
            json!({ "quantity": 5 }),
        ),
        ("POST", "/api/orders/x/fulfil".into(), Value::Null),
        ("GET", "/api/payments/admin/outage".into(), Value::Null),
    ] {
        let r = shop.send_as(&good, method, &path, body).await;
        assert_problem(&r, 403, "forbidden");
    }
    // Anonymous reads stay public.
    assert_eq!(
        shop.call("GET", "/api/products?limit=1", &[], "")
            .await
            .status,
        200
    );
    assert_eq!(
        shop.call("GET", &format!("/api/products/{MUG}"), &[], "")
            .await
            .status,
        200
    );
    assert_eq!(
        shop.call("GET", &format!("/api/inventory/{MUG}"), &[], "")
            .await
            .status,
        200
    );
}

/// Alice's paid order of one demo mug: its id.
async fn alice_buys_a_mug(shop: &Shop, alice: &str) -> String {
    let r = shop
        .send_as(
            alice,
            "POST",
            "/api/carts/me/items",
            json!({ "productId": MUG, "quantity": 1 }),
        )
        .await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), shop.app.log());
    let auth = format!("Bearer {alice}");
    let r = shop
        .call(
            "POST",
            "/api/orders",
            &[("authorization", &auth), ("idempotency-key", "k-1"), JSON],
            &json!({ "card": { "token": "tok_visa" } }).to_string(),
        )
        .await;
    assert_eq!(r.status, 201, "{}\n{}", r.text(), shop.app.log());
    assert_eq!(r.json()["status"], "PAID");
    text(&r.json()["orderId"])
}

#[tokio::test]
async fn customers_reach_only_their_own_carts_and_orders() {
    let shop = Shop::start("owners", Keys::default()).await;
    let alice = text(
        &shop
            .session("alice@example.com", "amber lantern quietly 42")
            .await["accessToken"],
    );
    let bob = text(
        &shop
            .session("bob@example.com", "cobalt harbour drifting 9")
            .await["accessToken"],
    );
    let admin = keys::token("ops", "admin");
    let order = alice_buys_a_mug(&shop, &alice).await;
    let path = format!("/api/orders/{order}");

    // The order service read Alice's cart with her own token and emptied it.
    let cart = shop.get_as(&alice, "/api/carts/me").await;
    assert_eq!(cart.json()["items"], json!([]), "{}", cart.text());

    // Bob: another customer's order does not exist for him.
    assert_problem(&shop.get_as(&bob, &path).await, 404, "not-found");
    assert_problem(
        &shop
            .send_as(&bob, "POST", &format!("{path}/cancel"), Value::Null)
            .await,
        404,
        "not-found",
    );
    assert_eq!(
        shop.get_as(&bob, "/api/orders").await.json()["orders"],
        json!([])
    );
    // His cart is his own.
    let r = shop
        .send_as(
            &bob,
            "POST",
            "/api/carts/me/items",
            json!({ "productId": MUG, "quantity": 3 }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        shop.get_as(&alice, "/api/carts/me").await.json()["items"],
        json!([])
    );

    // Alice and an administrator see it.
    assert_eq!(shop.get_as(&alice, &path).await.json()["status"], "PAID");
    let list = shop.get_as(&alice, "/api/orders").await.json();
    assert_eq!(list["orders"][0]["orderId"], order.as_str());
    assert_eq!(shop.get_as(&admin, &path).await.json()["status"], "PAID");

    // Fulfilment is the administrator's.
    let fulfil = format!("{path}/fulfil");
    assert_problem(
        &shop.send_as(&alice, "POST", &fulfil, Value::Null).await,
        403,
        "forbidden",
    );
    let r = shop.send_as(&admin, "POST", &fulfil, Value::Null).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "FULFILLED");
}

#[tokio::test]
async fn the_saga_routes_are_closed_to_outside_callers() {
    let shop = Shop::start("internal", Keys::default()).await;
    let alice = text(
        &shop
            .session("alice@example.com", "amber lantern quietly 42")
            .await["accessToken"],
    );
    let admin = keys::token("ops", "admin");
    let order = alice_buys_a_mug(&shop, &alice).await;
    let reservation = format!("/api/inventory/reservations/{order}");
    let payment = format!("/api/payments/{order}");
    let alice_auth = format!("Bearer {alice}");

    let calls: Vec<(&str, String, Value)> = vec![
        ("POST", format!("{reservation}/release"), Value::Null),
        ("POST", format!("{reservation}/commit"), Value::Null),
        ("GET", reservation.clone(), Value::Null),
        (
            "POST",
            "/api/inventory/reservations".into(),
            json!({ "reservationId": "r-x", "orderId": "r-x", "items": [{ "productId": MUG, "quantity": 25 }] }),
        ),
        ("POST", format!("{payment}/capture"), Value::Null),
        ("POST", format!("{payment}/refund"), Value::Null),
        ("GET", payment.clone(), Value::Null),
        (
            "POST",
            "/api/payments/authorize".into(),
            json!({ "paymentId": "p-x", "orderId": "p-x", "amount": { "amount": 100, "currency": "USD" }, "card": { "token": "tok_visa" } }),
        ),
    ];
    for (method, path, body) in &calls {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        // No token: 401.
        let r = shop.call(method, path, &[JSON], &body).await;
        assert_problem(&r, 401, "unauthenticated");
        // A customer, even the order's own: 403.
        let r = shop
            .call(method, path, &[("authorization", &alice_auth), JSON], &body)
            .await;
        assert_problem(&r, 403, "forbidden");
        // Pretending to be a chained request does not help: the runtime
        // replaces `spin-client-addr` on every network request.
        let r = shop
            .call(
                method,
                path,
                &[
                    ("authorization", &alice_auth),
                    ("spin-client-addr", "0.0.0.0:0"),
                    JSON,
                ],
                &body,
            )
            .await;
        assert_problem(&r, 403, "forbidden");
    }
    // Nothing moved.
    let r = shop.get_as(&admin, &reservation).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "RESERVED");
    assert_eq!(
        shop.get_as(&admin, &payment).await.json()["status"],
        "CAPTURED"
    );
    let stock = shop
        .call("GET", &format!("/api/inventory/{MUG}"), &[], "")
        .await
        .json();
    assert_eq!(
        (stock["reserved"].clone(), stock["available"].clone()),
        (json!(1), json!(24))
    );
    let row = shop
        .query_one("SELECT count(*) FROM inventory.reservations WHERE reservation_id = 'r-x'")
        .await;
    assert_eq!(row.get::<_, i64>(0), 0);

    // The order service still drives them over service chaining: Alice's
    // cancel releases the stock and refunds the payment.
    let r = shop
        .send_as(
            &alice,
            "POST",
            &format!("/api/orders/{order}/cancel"),
            Value::Null,
        )
        .await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), shop.app.log());
    assert_eq!(r.json()["status"], "CANCELLED");
    assert_eq!(
        shop.get_as(&admin, &reservation).await.json()["status"],
        "RELEASED"
    );
    assert_eq!(
        shop.get_as(&admin, &payment).await.json()["status"],
        "REFUNDED"
    );
}

#[tokio::test]
async fn an_auth_run_logs_no_seed_password_or_token() {
    let shop = Shop::start(
        "secrets",
        Keys {
            signing: vec![(KID_2, SEED_2), (KID, SEED)],
            public: vec![(KID_2, SEED_2), (KID, SEED)],
            admins: "root@shop.example",
        },
    )
    .await;
    let passwords = [
        "violet orchard humming 314",
        "amber hedgehog sunrise 271",
        "violet orchard humming 315",
    ];
    let mut secrets: Vec<String> = passwords.iter().map(|p| p.to_string()).collect();
    let session = shop.session("erin@example.com", passwords[0]).await;
    let admin = shop.session("root@shop.example", passwords[1]).await;
    // Failures that carry a password: a wrong one, a weak one, a broken
    // body around one.
    shop.login("erin@example.com", passwords[2]).await;
    shop.register("frank@example.com", "frankfrank").await;
    shop.call(
        "POST",
        "/api/auth/login",
        &[JSON],
        &format!(
            "{{\"email\": \"erin@example.com\", \"password\": \"{}\"",
            passwords[0]
        ),
    )
    .await;
    let refresh = text(&session["refreshToken"]);
    let rotated = shop.refresh(&refresh).await.json();
    shop.refresh(&refresh).await; // reuse: revokes and is logged
    for tokens in [&session, &admin, &rotated] {
        secrets.push(text(&tokens["accessToken"]));
        secrets.push(text(&tokens["refreshToken"]));
    }
    // A protected call or two with them.
    shop.get_as(&text(&session["accessToken"]), "/api/orders")
        .await;
    shop.get_as(
        &text(&admin["accessToken"]),
        &format!("/api/payments/{MUG}"),
    )
    .await;

    let log = shop.app.log();
    assert!(
        log.contains("a rotated refresh token was used again"),
        "the run did not log what it should:\n{log}"
    );
    for seed in [SEED, SEED_2] {
        secrets.push(b64(seed));
        secrets.push(String::from_utf8(seed.to_vec()).unwrap());
    }
    secrets.push(keys::signing_keys(&[(KID_2, SEED_2), (KID, SEED)]));
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "the log holds a secret ({}…):\n{log}",
            &secret[..8]
        );
    }
}
