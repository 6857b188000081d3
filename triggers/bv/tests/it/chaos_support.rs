//! What the fault tests (`chaos.rs`) stand on: servers of their own that
//! they can stop and start without disturbing the other tests, which share
//! the machine's PostgreSQL (5432) and Redis (6379), and the shop they run.
//!
//! - [`PrivateRedis`]: a real `redis-server` on a free port, with an
//!   append-only file fsynced on every write (so what it acknowledged
//!   survives a kill), stopped with SIGKILL and started again on the same
//!   port and data.
//! - [`PrivatePostgres`]: a real PostgreSQL cluster of its own (`initdb`
//!   and `pg_ctl` from `/usr/lib/postgresql/<version>/bin`, trust
//!   authentication, a free port, its data in a temporary directory; run
//!   as the `postgres` user when the tests run as root, since PostgreSQL
//!   refuses root), stopped with `pg_ctl stop -m immediate` (like a crash:
//!   sessions cut, no checkpoint) and started again on the same data.
//! - [`Shop`]: `bv up` on every commerce component the checkout touches,
//!   pointed at those servers, with the knobs the faults need.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use bv_test_servers::wait_for_port;
pub use bv_test_servers::{free_port, PrivatePostgres};

use crate::auth_support;
use crate::harness::*;
use crate::repo_manifest::{RepoManifest, CHECKOUT};

/// A `redis-server` of the test's own.
pub struct PrivateRedis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateRedis {
    pub fn start() -> Self {
        let mut redis = Self {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it again on the same port and data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "redis is running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server (Debian package redis-server)");
        self.child = Some(child);
        wait_for_port(self.port, "redis-server");
    }

    /// Kills it (SIGKILL): connections cut, nothing flushed beyond what it
    /// already fsynced.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn client(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The shop's knobs.
#[derive(Clone)]
pub struct Knobs {
    /// `postgres://…` of every component's database.
    pub db_url: String,
    pub redis_url: String,
    pub payment_latency_ms: u32,
    pub payment_timeout_ms: u32,
    pub breaker_open_ms: u32,
    pub product_cache_ttl_seconds: u32,
    pub saga_timeout_seconds: u32,
    /// The order sweeper's longest retry delay.
    pub sweeper_retry_max_ms: u32,
    /// Components besides the checkout's (e.g. `auth`, `order-analytics`).
    pub more_components: Vec<&'static str>,
    /// Environment for `bv` besides the servers' URLs and the auth keys.
    pub env: Vec<(String, String)>,
    /// Run `bv` under its supervisor with this pid file (restarted when
    /// killed, on the same addresses).
    pub supervised: Option<std::path::PathBuf>,
}

impl Knobs {
    pub fn new(db_url: String, redis_url: String) -> Self {
        Self {
            db_url,
            redis_url,
            payment_latency_ms: 0,
            payment_timeout_ms: 2_000,
            breaker_open_ms: 10_000,
            product_cache_ttl_seconds: 30,
            saga_timeout_seconds: 2,
            sweeper_retry_max_ms: 1_000,
            more_components: Vec::new(),
            env: Vec::new(),
            supervised: None,
        }
    }
}

/// The port of a `postgres://host:port/…` URL.
fn pg_port(url: &str) -> &str {
    let after_host = url.split('@').nth(1).unwrap();
    let host_port = after_host.split('/').next().unwrap();
    host_port.rsplit(':').next().unwrap()
}

/// Every commerce component the checkout touches, as `spin.toml` has them,
/// on the knobs' servers.
fn manifest(k: &Knobs) -> String {
    let db_host = format!("127.0.0.1:{}", pg_port(&k.db_url));
    let (cache_ttl, breaker_open) = (
        k.product_cache_ttl_seconds.to_string(),
        k.breaker_open_ms.to_string(),
    );
    let components: Vec<&str> = CHECKOUT.iter().chain(&k.more_components).copied().collect();
    RepoManifest::load()
        .only("chaos", &components)
        .without_rate_limits()
        .required_variable("db_url")
        .required_variable("redis_url")
        .variable("db_host", &db_host)
        .trigger_setting("postgres", "poll_interval_ms", 100)
        .trigger_field("postgres", "order-sweeper", "retry_initial_ms", 100)
        .trigger_field(
            "postgres",
            "order-sweeper",
            "retry_max_ms",
            i64::from(k.sweeper_retry_max_ms),
        )
        .trigger_field("cron", "order-sweeper", "cron_expression", "*/1 * * * * *")
        .component_variable("cart", "cart_ttl_seconds", "3600")
        .component_variable("cart", "product_cache_ttl_seconds", &cache_ttl)
        .component_variable("cart", "product_timeout_ms", "1000")
        .component_variable("cart", "breaker_open_ms", &breaker_open)
        .variable("payment_latency_ms", &k.payment_latency_ms.to_string())
        .component_variable(
            "order",
            "payment_timeout_ms",
            &k.payment_timeout_ms.to_string(),
        )
        .component_variable("order", "inventory_timeout_ms", "2000")
        .component_variable("order", "breaker_open_ms", &breaker_open)
        .environment(
            "order-sweeper",
            "SAGA_TIMEOUT_SECONDS",
            &k.saga_timeout_seconds.to_string(),
        )
        .render()
}

pub const JSON: (&str, &str) = ("content-type", "application/json");

/// How long any one request of a fault test may take: past it, it hung.
pub const HANG: Duration = Duration::from_secs(25);

/// A reply and how long it took.
pub struct Timed {
    pub reply: Reply,
    pub took: Duration,
}

impl Timed {
    pub fn kind(&self) -> String {
        if self.reply.status < 400 {
            return String::new();
        }
        serde_json::from_slice::<Value>(&self.reply.body)
            .ok()
            .and_then(|v| v["type"].as_str().map(str::to_string))
            .map(|t| t.trim_start_matches("urn:bitvelocity:problem:").to_string())
            .unwrap_or_else(|| format!("(not a problem: {})", self.reply.text()))
    }

    pub fn json(&self) -> Value {
        self.reply.json()
    }
}

/// The shop: `bv up` on [`manifest`].
pub struct Shop {
    pub app: TestApp,
}

impl Shop {
    pub async fn start(knobs: Knobs) -> Self {
        let app = spawn_app_with(
            &manifest(&knobs),
            Spawn {
                env: Self::env(&knobs),
                supervised: knobs.supervised.clone(),
                ..Default::default()
            },
        )
        .await;
        Self { app }
    }

    fn env(k: &Knobs) -> Vec<(String, String)> {
        let mut env = auth_support::env_with_signing_keys();
        env.push(("SPIN_VARIABLE_DB_URL".into(), k.db_url.clone()));
        env.push(("SPIN_VARIABLE_REDIS_URL".into(), k.redis_url.clone()));
        env.extend(k.env.iter().cloned());
        env
    }

    /// Stops `bv` (SIGTERM, drained) and starts it again with `knobs`, on
    /// the same servers.
    pub async fn restart_with(&mut self, knobs: Knobs) {
        self.app.terminate().await;
        *self = Self::start(knobs).await;
    }

    /// One request, timed; panics when it hangs past [`HANG`].
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Timed {
        let start = Instant::now();
        let reply = tokio::time::timeout(
            HANG,
            request(self.app.addr, method, path, headers, body.to_string()),
        )
        .await
        .unwrap_or_else(|_| panic!("{method} {path} hung for {HANG:?}"));
        Timed {
            reply,
            took: start.elapsed(),
        }
    }

    /// A product priced `price` EUR cents with `on_hand` units: its id.
    pub async fn product(&self, sku: &str, price: i64, on_hand: i64) -> String {
        let admin = auth_support::admin();
        let body = json!({
            "sku": sku, "name": format!("Product {sku}"), "category": "mugs",
            "price": { "amount": price, "currency": "EUR" }
        });
        let r = self
            .call("POST", "/api/products", &[admin, JSON], &body.to_string())
            .await;
        assert_eq!(r.reply.status, 201, "{}", r.reply.text());
        let id = r.json()["id"].as_str().unwrap().to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self
            .call("GET", &format!("/api/inventory/{id}"), &[admin], "")
            .await
            .reply
            .status
            != 200
        {
            assert!(
                Instant::now() < deadline,
                "no stock record\n{}",
                self.app.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let r = self
            .call(
                "POST",
                &format!("/api/inventory/{id}/restock"),
                &[admin, JSON],
                &json!({ "quantity": on_hand }).to_string(),
            )
            .await;
        assert_eq!(r.reply.status, 200, "{}", r.reply.text());
        id
    }

    pub async fn add(&self, customer: &str, product: &str, quantity: i64) -> Timed {
        self.call(
            "POST",
            "/api/carts/me/items",
            &[auth_support::customer(customer), JSON],
            &json!({ "productId": product, "quantity": quantity }).to_string(),
        )
        .await
    }

    pub async fn cart(&self, customer: &str) -> Timed {
        self.call(
            "GET",
            "/api/carts/me",
            &[auth_support::customer(customer)],
            "",
        )
        .await
    }

    pub async fn checkout(&self, customer: &str, key: &str) -> Timed {
        self.call(
            "POST",
            "/api/orders",
            &[
                auth_support::customer(customer),
                ("idempotency-key", key),
                JSON,
            ],
            &json!({ "card": { "token": "tok_visa" } }).to_string(),
        )
        .await
    }

    /// Switches the payment provider's outage on or off.
    pub async fn payment_outage(&self, on: bool) {
        let r = self
            .call(
                "POST",
                "/api/payments/admin/outage",
                &[auth_support::admin(), JSON],
                &json!({ "on": on }).to_string(),
            )
            .await;
        assert_eq!(r.reply.status, 200, "{}", r.reply.text());
        assert_eq!(r.json()["on"], on);
    }
}

/// The database the shop's components share, read natively.
pub async fn db(url: &str) -> tokio_postgres::Client {
    let config: tokio_postgres::Config = url.parse().unwrap();
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// What the database holds once every saga has ended: orders by status,
/// and whether the stock and payments agree with them.
#[derive(Debug)]
pub struct Books {
    pub paid: Vec<String>,
    pub failed: i64,
    pub cancelled: i64,
    /// Units reserved in stock.
    pub reserved: i64,
    /// Units the PAID orders hold.
    pub held_by_paid: i64,
    /// Payments CAPTURED for PAID orders.
    pub captured_for_paid: i64,
    /// Payments still holding money (AUTHORIZED or CAPTURED) for orders
    /// that are not PAID.
    pub held_for_unpaid: i64,
}

/// Waits (up to `within`) until no saga is unfinished, then reads the
/// books. `url` is the shop's database.
pub async fn settled_books(url: &str, within: Duration) -> Books {
    let deadline = Instant::now() + within;
    loop {
        let client = db(url).await;
        let open: i64 = client
            .query_one(
                "SELECT count(*) FROM orders.sagas WHERE state <> 'finished'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if open == 0 {
            return books(&client).await;
        }
        assert!(
            Instant::now() < deadline,
            "{open} sagas still unfinished after {within:?}"
        );
        drop(client);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn books(client: &tokio_postgres::Client) -> Books {
    let count = |status: &'static str| async move {
        client
            .query_one(
                "SELECT count(*) FROM orders.orders WHERE status = $1",
                &[&status],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let paid = client
        .query(
            "SELECT order_id FROM orders.orders WHERE status = 'PAID'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    let one = |sql: &'static str| async move {
        client
            .query_one(sql, &[])
            .await
            .unwrap()
            .get::<_, Option<i64>>(0)
            .unwrap_or(0)
    };
    Books {
        paid,
        failed: count("FAILED").await,
        cancelled: count("CANCELLED").await,
        reserved: one("SELECT sum(reserved)::bigint FROM inventory.stock").await,
        held_by_paid: one(
            "SELECT sum((l->>'quantity')::bigint)::bigint FROM orders.orders o,
             jsonb_array_elements(o.items) l WHERE o.status = 'PAID'",
        )
        .await,
        captured_for_paid: one(
            "SELECT count(*) FROM orders.orders o JOIN payments p ON p.payment_id = o.order_id
             WHERE o.status = 'PAID' AND p.status = 'CAPTURED'",
        )
        .await,
        held_for_unpaid: one(
            "SELECT count(*) FROM payments p JOIN orders.orders o ON o.order_id = p.payment_id
             WHERE o.status <> 'PAID' AND p.status IN ('AUTHORIZED', 'CAPTURED')",
        )
        .await,
    }
}
