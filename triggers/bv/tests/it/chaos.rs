//! Fault tests: the commerce components under load while a real server
//! they depend on fails, each printing what was accepted and what was
//! kept, and asserting that nothing accepted was lost.
//!
//! The servers that fail are the tests' own (see `chaos_support.rs`): a
//! `redis-server` on a free port, and a PostgreSQL cluster made with
//! `initdb` on a free port. They really stop (SIGKILL, `pg_ctl stop -m
//! immediate`) and start again on the same data; the machine's shared
//! servers, which other tests use at the same time, are never touched.
//! The payment provider's faults are its own knobs (`payment_latency_ms`,
//! the outage switch); the product service's is a lock on its table, which
//! makes its reads hang.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::chaos_support::*;
use crate::pg_support::TestDb;

/// One request of a load.
#[derive(Debug, Clone)]
struct Sample {
    worker: String,
    what: &'static str,
    status: u16,
    kind: String,
    started: Instant,
    ended: Instant,
    /// The order a 201 checkout answered.
    order: Option<String>,
}

impl Sample {
    fn of(worker: &str, what: &'static str, started: Instant, t: &Timed) -> Self {
        let order = (t.reply.status == 201)
            .then(|| t.json()["orderId"].as_str().map(str::to_string))
            .flatten();
        Self {
            worker: worker.to_string(),
            what,
            status: t.reply.status,
            kind: match t.kind().as_str() {
                // Which dependency, and why (`inventory-circuit-open`…).
                "dependency-unavailable" => match t.json()["reason"].as_str() {
                    Some(reason) => format!("dependency-unavailable ({reason})"),
                    None => t.kind(),
                },
                _ => t.kind(),
            },
            started,
            ended: Instant::now(),
            order,
        }
    }

    fn took(&self) -> Duration {
        self.ended - self.started
    }

    /// Sent and answered while the server was down (with `grace` after it
    /// went down for the connections to notice).
    fn within(&self, down: Instant, up: Instant, grace: Duration) -> bool {
        self.started >= down + grace && self.ended <= up
    }
}

type Samples = Arc<Mutex<Vec<Sample>>>;

/// Units of `product` reserved now.
async fn reserved(shop: &Shop, product: &str) -> i64 {
    let r = shop
        .call(
            "GET",
            &format!("/api/inventory/{product}"),
            &[crate::auth_support::admin()],
            "",
        )
        .await;
    r.json()["reserved"].as_i64().unwrap()
}

/// The state of `dependency`'s breaker as Redis holds it (no hash:
/// closed).
async fn breaker_state(redis: &PrivateRedis, dependency: &str) -> String {
    let mut client = redis.client().await;
    redis::cmd("HGET")
        .arg(format!("breaker:{dependency}"))
        .arg("state")
        .query_async::<Option<String>>(&mut client)
        .await
        .unwrap()
        .unwrap_or_else(|| "closed".into())
}

/// Statuses (and problem kinds) of `samples`, counted.
fn tally<'a>(samples: impl Iterator<Item = &'a Sample>) -> String {
    let mut counts = std::collections::BTreeMap::new();
    for s in samples {
        let key = if s.kind.is_empty() {
            s.status.to_string()
        } else {
            format!("{} {}", s.status, s.kind)
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    format!("{counts:?}")
}

/// Workers adding to their carts until `stop` is set: `carts` of them one
/// unit at a time of each of `products` in turn (a line holds at most 99),
/// and `buyers` one unit of the first product, then checking out.
fn load(
    shop: &Arc<Shop>,
    products: &[String],
    carts: usize,
    buyers: usize,
    stop: &Arc<AtomicBool>,
    samples: &Samples,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (i, buyer) in (0..carts)
        .map(|i| (i, false))
        .chain((0..buyers).map(|i| (i, true)))
    {
        let (shop, products, stop, samples) = (
            shop.clone(),
            products.to_vec(),
            stop.clone(),
            samples.clone(),
        );
        let name = if buyer {
            format!("buyer-{i}")
        } else {
            format!("cart-{i}")
        };
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let product = if buyer {
                    &products[0]
                } else {
                    &products[n % products.len()]
                };
                let started = Instant::now();
                let t = shop.add(&name, product, 1).await;
                samples
                    .lock()
                    .unwrap()
                    .push(Sample::of(&name, "add", started, &t));
                n += 1;
                if buyer {
                    let started = Instant::now();
                    let t = shop.checkout(&name, &format!("{name}-{n}")).await;
                    samples
                        .lock()
                        .unwrap()
                        .push(Sample::of(&name, "checkout", started, &t));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    tasks
}

/// The orders of the checkouts answered 201.
fn accepted_orders(samples: &[Sample]) -> Vec<String> {
    samples.iter().filter_map(|s| s.order.clone()).collect()
}

/// Every checkout answered 201 (`accepted`) is a PAID order, captured,
/// holding its stock; nothing else holds stock or money. Prints the books.
fn assert_nothing_accepted_lost(label: &str, accepted: &[String], books: &Books) {
    let lost: Vec<&String> = accepted
        .iter()
        .filter(|id| !books.paid.contains(id))
        .collect();
    eprintln!(
        "{label}: checkouts accepted (201) {}, kept PAID {} (PAID in all {}), lost {}; \
         FAILED {}, CANCELLED {}; stock reserved {} = held by PAID orders {}; \
         payments captured for PAID {}, money held for unpaid orders {}",
        accepted.len(),
        accepted.len() - lost.len(),
        books.paid.len(),
        lost.len(),
        books.failed,
        books.cancelled,
        books.reserved,
        books.held_by_paid,
        books.captured_for_paid,
        books.held_for_unpaid
    );
    assert!(lost.is_empty(), "{label}: accepted orders lost: {lost:?}");
    assert_eq!(
        books.captured_for_paid as usize,
        books.paid.len(),
        "{label}: every PAID order's payment is captured"
    );
    assert_eq!(
        books.reserved, books.held_by_paid,
        "{label}: only PAID orders hold stock"
    );
    assert_eq!(
        books.held_for_unpaid, 0,
        "{label}: no money held for an order that is not PAID"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_stopped_during_cart_and_checkout_load() {
    let db = TestDb::new("chaos_redis").await;
    let mut redis = PrivateRedis::start();
    let mut knobs = Knobs::new(db.url(), redis.url());
    // Slow enough that checkouts are always under way when Redis dies.
    knobs.payment_latency_ms = 300;
    let shop = Arc::new(Shop::start(knobs).await);
    let mut products = Vec::new();
    for sku in ["MUG", "TEA", "PEN", "CUP"] {
        products.push(shop.product(sku, 500, 100_000).await);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let samples: Samples = Arc::default();
    let tasks = load(&shop, &products, 4, 4, &stop, &samples);
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    // The buyers go in step, so a fixed moment may find them all still
    // reading their carts: kill Redis while a checkout is in its saga, past
    // the cart and not yet paid (authorize and capture take 300 ms each),
    // so that one is under way for sure.
    let orders = db.client().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let running: i64 = orders
            .query_one(
                "SELECT count(*) FROM orders.sagas WHERE state = 'running' \
                 AND step IN ('create-order', 'reserve-stock', 'authorize-payment')",
                &[],
            )
            .await
            .map(|row| row.get(0))
            .unwrap_or(0);
        if running > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no checkout reached its saga");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    redis.kill();
    let down = Instant::now();
    // The order service does not need Redis: orders are still served.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let listed = shop
        .call(
            "GET",
            "/api/orders",
            &[crate::auth_support::customer("buyer-0")],
            "",
        )
        .await;
    assert_eq!(listed.reply.status, 200, "{}", listed.reply.text());
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    // A request that started while Redis was down may end on the restarted
    // one: the window of "down" closes when the restart begins.
    let restarting = Instant::now();
    redis.restart();
    let up = Instant::now();
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let samples = samples.lock().unwrap().clone();
    let grace = Duration::from_millis(100);

    // While Redis was down: carts answered a clear 503 problem at once.
    let adds_down: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.what == "add" && s.within(down, restarting, grace))
        .collect();
    let checkouts_down: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.what == "checkout" && s.within(down, restarting, grace))
        .collect();
    eprintln!(
        "redis down {:?}: cart adds {} {}, checkouts {} {}",
        restarting - down,
        adds_down.len(),
        tally(adds_down.iter().copied()),
        checkouts_down.len(),
        tally(checkouts_down.iter().copied())
    );
    assert!(adds_down.len() >= 4, "load ran while Redis was down");
    // An add racing the kill itself may still be served (and is then kept,
    // checked below); every other one fails fast with 503.
    let refused = adds_down
        .iter()
        .filter(|s| (s.status, s.kind.as_str()) == (503, "unavailable"))
        .count();
    assert!(refused + 2 >= adds_down.len(), "{adds_down:?}");
    for s in &adds_down {
        assert!(
            matches!((s.status, s.kind.as_str()), (503, "unavailable") | (200, _)),
            "{s:?}"
        );
        assert!(s.took() < Duration::from_secs(3), "slow failure: {s:?}");
    }
    for s in &checkouts_down {
        assert!(
            matches!((s.status, s.kind.as_str()), (503, _) | (409, "empty-cart")),
            "{s:?}"
        );
    }
    // Checkouts already past the cart when Redis died went on: their
    // breakers could not reach Redis and let the calls through.
    let finished_during = samples
        .iter()
        .filter(|s| s.status == 201 && s.ended > down + grace && s.started < down)
        .count();
    eprintln!(
        "checkouts under way when Redis died that were paid: {finished_during}; \
         breaker fail-open log lines: {}",
        shop.app.log().matches("decides alone").count()
    );
    assert!(finished_during >= 1, "{}", tally(samples.iter()));
    // Every answer, all along, was a success or a problem: no 500.
    assert!(
        samples.iter().all(|s| s.status < 500 || s.status == 503),
        "{}",
        tally(samples.iter())
    );
    // After the restart, carts work again.
    let after_ok = samples
        .iter()
        .filter(|s| s.what == "add" && s.started > up + Duration::from_secs(1))
        .filter(|s| s.status == 200)
        .count();
    assert!(after_ok >= 4, "{}", tally(samples.iter()));

    // Carts: every accepted add is still there after the crash (a 503 may
    // or may not have been applied: the add can succeed and the answer
    // fail).
    let (mut accepted, mut kept, mut unsure) = (0, 0, 0);
    for i in 0..4 {
        let name = format!("cart-{i}");
        let mine = samples.iter().filter(|s| s.worker == name);
        let ok = mine.clone().filter(|s| s.status == 200).count() as i64;
        let maybe = mine.filter(|s| s.status != 200).count() as i64;
        let cart = shop.cart(&name).await;
        assert_eq!(cart.reply.status, 200, "{}", cart.reply.text());
        let quantity: i64 = cart.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["quantity"].as_i64().unwrap())
            .sum();
        assert!(
            ok <= quantity && quantity <= ok + maybe,
            "{name}: {ok} adds accepted, {maybe} unanswered, {quantity} in the cart"
        );
        (accepted, kept, unsure) = (accepted + ok, kept + quantity, unsure + maybe);
    }
    eprintln!("carts: adds accepted {accepted}, units kept {kept}, adds answered 503 {unsure}");

    let books = settled_books(&db.url(), Duration::from_secs(60)).await;
    assert_nothing_accepted_lost("redis outage", &accepted_orders(&samples), &books);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_stopped_and_restarted_during_checkouts() {
    let mut pg = PrivatePostgres::start();
    let redis = PrivateRedis::start();
    let mut knobs = Knobs::new(pg.url(), redis.url());
    knobs.payment_latency_ms = 100;
    // Sagas cut by the crash fail their inventory and payment calls, which
    // may open those breakers just as Postgres goes down; open, a breaker
    // refuses checkouts (503 dependency-unavailable) for `breaker_open_ms`
    // whether Postgres is back or not. The default 10 s would outlast the
    // 4 s this test watches after the restart.
    knobs.breaker_open_ms = 1_000;
    let shop = Arc::new(Shop::start(knobs).await);
    let mug = shop.product("MUG", 500, 100_000).await;

    let stop = Arc::new(AtomicBool::new(false));
    let samples: Samples = Arc::default();
    let tasks = load(&shop, &[mug], 0, 6, &stop, &samples);
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let stopping = Instant::now();
    pg.stop();
    let down = Instant::now();
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    pg.restart();
    let up = Instant::now();
    tokio::time::sleep(Duration::from_millis(4_000)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let samples = samples.lock().unwrap().clone();
    let checkouts = || samples.iter().filter(|s| s.what == "checkout");

    // While Postgres was down: checkouts failed fast with 503.
    let grace = Duration::from_millis(500);
    let during: Vec<&Sample> = checkouts().filter(|s| s.within(down, up, grace)).collect();
    let slowest = during.iter().map(|s| s.took()).max().unwrap_or_default();
    eprintln!(
        "postgres down {:?}: checkouts {} {}, slowest {slowest:?}; before {}; after {}",
        up - down,
        during.len(),
        tally(during.iter().copied()),
        tally(checkouts().filter(|s| s.ended < stopping)),
        tally(checkouts().filter(|s| s.started > up)),
    );
    assert!(during.len() >= 6, "load ran while Postgres was down");
    for s in &during {
        assert_eq!(s.status, 503, "{s:?}");
        assert!(
            s.took() < Duration::from_secs(2),
            "did not fail fast: {s:?}"
        );
    }
    // Checkouts work again once it is back.
    assert!(
        checkouts().any(|s| s.started > up && s.status == 201),
        "no checkout succeeded after the restart: {}",
        tally(checkouts().filter(|s| s.started > up))
    );

    // Every order answered 201 exists, PAID and consistent; every other
    // order was compensated (by its saga or, for those cut short by the
    // crash, by the sweeper).
    let books = settled_books(&pg.url(), Duration::from_secs(90)).await;
    assert_nothing_accepted_lost("postgres outage", &accepted_orders(&samples), &books);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_or_down_payment_provider_opens_the_breaker() {
    let db = TestDb::new("chaos_payment").await;
    let redis = PrivateRedis::start();
    let mut knobs = Knobs::new(db.url(), redis.url());
    // Slow: every payment call answers after 3 s; the order gives each
    // attempt 1 s.
    knobs.payment_latency_ms = 3_000;
    knobs.payment_timeout_ms = 1_000;
    knobs.breaker_open_ms = 8_000;
    // The first checkout waits for the slow provider for about 5 s: longer
    // than the default 2 s after which the sweeper takes a silent saga over
    // (and cancels its order). This test is about the breaker, so the
    // sweeper waits 10 s and each order ends as its own saga ends it.
    knobs.saga_timeout_seconds = 10;
    let mut shop = Shop::start(knobs.clone()).await;
    let mug = shop.product("MUG", 500, 1_000).await;

    // 1. Slow: the first checkouts time out (and retry) until the breaker
    //    opens; from then on they fail at once, and give the stock back.
    let mut slow = Vec::new();
    let mut fast = Vec::new();
    for n in 0..8 {
        let customer = format!("slow-{n}");
        assert_eq!(shop.add(&customer, &mug, 1).await.reply.status, 200);
        let t = shop.checkout(&customer, "k").await;
        let reserved = reserved(&shop, &mug).await;
        eprintln!(
            "slow payment: checkout {n}: {} {} in {:?}; reserved now {reserved}",
            t.reply.status,
            t.kind(),
            t.took
        );
        assert_eq!(t.reply.status, 503, "{}", t.reply.text());
        assert_eq!(reserved, 0, "the stock was given back");
        if t.kind() == "dependency-unavailable" && t.took < Duration::from_millis(1_500) {
            let body = t.json();
            assert_eq!(body["dependency"], "payment");
            assert_eq!(body["reason"], "payment-circuit-open");
            assert!(t.reply.headers.contains_key("retry-after"));
            fast.push(t.took);
        } else {
            assert!(
                fast.is_empty(),
                "once open, it stays open: {}",
                t.reply.text()
            );
            slow.push(t.took);
        }
    }
    eprintln!(
        "slow payment: {} checkouts waited for it ({slow:?}), {} failed fast ({fast:?})",
        slow.len(),
        fast.len()
    );
    assert!(
        slow.len() <= 3,
        "the breaker opened after at most 3 checkouts"
    );
    assert!(fast.len() >= 5);
    assert_eq!(breaker_state(&redis, "payment").await, "open");
    // The failed orders are FAILED, their payments (authorized by the slow
    // provider after the order gave up) voided, by the saga or the sweeper.
    let books = settled_books(&db.url(), Duration::from_secs(60)).await;
    assert_nothing_accepted_lost("slow payment", &[], &books);
    let mut paid = Vec::new();
    assert_eq!((books.paid.len(), books.failed), (0, 8));

    // 2. Recovered: a new process (latency 0) shares the breaker through
    //    Redis; once it lets a probe through, checkouts succeed again.
    knobs.payment_latency_ms = 0;
    shop.restart_with(knobs.clone()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut refused = 0;
    loop {
        let customer = format!("back-{refused}");
        assert_eq!(shop.add(&customer, &mug, 1).await.reply.status, 200);
        let t = shop.checkout(&customer, "k").await;
        if t.reply.status == 201 {
            paid.push(t.json()["orderId"].as_str().unwrap().to_string());
            break;
        }
        assert_eq!(t.kind(), "dependency-unavailable", "{}", t.reply.text());
        refused += 1;
        assert!(Instant::now() < deadline, "the breaker never closed");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(breaker_state(&redis, "payment").await, "closed");
    for n in 0..3 {
        let customer = format!("ok-{n}");
        assert_eq!(shop.add(&customer, &mug, 1).await.reply.status, 200);
        let t = shop.checkout(&customer, "k").await;
        assert_eq!(t.reply.status, 201, "{}", t.reply.text());
        paid.push(t.json()["orderId"].as_str().unwrap().to_string());
    }
    eprintln!("recovery: refused while still open {refused}, then 4 checkouts paid");

    // 3. Down: the provider answers 503 at once. After its failures the
    //    breaker opens; checkouts then fail without calling it.
    shop.payment_outage(true).await;
    let mut kinds = Vec::new();
    for n in 0..6 {
        let customer = format!("down-{n}");
        assert_eq!(shop.add(&customer, &mug, 1).await.reply.status, 200);
        let t = shop.checkout(&customer, "k").await;
        assert_eq!(t.reply.status, 503, "{}", t.reply.text());
        assert!(
            t.reply.headers.contains_key("retry-after"),
            "a 503 without Retry-After: {}",
            t.reply.text()
        );
        assert_eq!(
            reserved(&shop, &mug).await,
            4,
            "only the 4 paid orders hold stock"
        );
        kinds.push(t.kind());
    }
    eprintln!("payment down: {kinds:?}");
    assert!(kinds.iter().take(2).any(|k| k == "payment-unavailable"));
    assert!(kinds.iter().skip(2).all(|k| k == "dependency-unavailable"));
    shop.payment_outage(false).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    loop {
        n += 1;
        let customer = format!("up-{n}");
        assert_eq!(shop.add(&customer, &mug, 1).await.reply.status, 200);
        let t = shop.checkout(&customer, "k").await;
        if t.reply.status == 201 {
            paid.push(t.json()["orderId"].as_str().unwrap().to_string());
            break;
        }
        assert!(Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let books = settled_books(&db.url(), Duration::from_secs(60)).await;
    eprintln!("payment faults overall: {books:?}");
    assert_nothing_accepted_lost("payment faults", &paid, &books);
    assert_eq!(books.paid.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hanging_product_service_leaves_carts_with_last_known_prices() {
    let db = TestDb::new("chaos_product").await;
    let redis = PrivateRedis::start();
    let mut knobs = Knobs::new(db.url(), redis.url());
    // Products go stale after a second, so the fault is seen at once.
    knobs.product_cache_ttl_seconds = 1;
    knobs.breaker_open_ms = 2_000;
    let shop = Shop::start(knobs).await;
    let mug = shop.product("MUG", 1299, 100).await;
    let tea = shop.product("TEA", 450, 100).await;
    let r = shop.add("dora", &mug, 1).await;
    assert_eq!(r.reply.status, 200, "{}", r.reply.text());
    assert!(r.json().get("degraded").is_none());
    assert!(!r.reply.headers.contains_key("warning"));

    // Product's reads now hang behind a lock.
    let client = db.client().await;
    client
        .batch_execute("BEGIN; LOCK TABLE product.products IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;

    let mut took = Vec::new();
    for _ in 0..6 {
        let r = shop.cart("dora").await;
        assert_eq!(r.reply.status, 200, "{}", r.reply.text());
        let cart = r.json();
        assert_eq!(cart["degraded"], true, "{cart}");
        assert_eq!(cart["items"][0]["stale"], true, "{cart}");
        assert_eq!(cart["items"][0]["unitPrice"]["amount"], 1299);
        assert!(r.reply.headers["warning"]
            .to_str()
            .unwrap()
            .starts_with("111 "));
        took.push(r.took);
    }
    eprintln!("product hanging: stale carts served in {took:?}");
    // The first waited for the deadlines; once the breaker opened (shared
    // in Redis), the cart stops asking.
    assert!(took[0] >= Duration::from_millis(1_000), "{took:?}");
    assert!(took[5] < Duration::from_millis(500), "{took:?}");
    assert_eq!(breaker_state(&redis, "product").await, "open");

    // A product never seen cannot be priced: 503, at once.
    let r = shop.add("dora", &tea, 1).await;
    assert_eq!((r.reply.status, r.kind().as_str()), (503, "unavailable"));
    assert_eq!(
        r.reply.headers["retry-after"], "1",
        "every 503 says when to retry"
    );
    // A degraded cart is not checked out at stale prices.
    let r = shop.checkout("dora", "k").await;
    assert_eq!(
        (r.reply.status, r.kind().as_str()),
        (503, "dependency-unavailable"),
        "{}",
        r.reply.text()
    );
    assert_eq!(
        r.reply.headers["retry-after"], "1",
        "every 503 says when to retry"
    );
    assert_eq!(r.json()["dependency"], "product");
    let orders: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM orders.orders", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or(0);
    assert_eq!(orders, 0, "no order at stale prices");

    // Product answers again: after the breaker's open time, a probe goes
    // through and the cart is current again.
    client.batch_execute("ROLLBACK").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = shop.cart("dora").await;
        if r.json().get("degraded").is_none() {
            assert!(!r.reply.headers.contains_key("warning"));
            break;
        }
        assert!(Instant::now() < deadline, "never current again");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let r = shop.checkout("dora", "k").await;
    assert_eq!(r.reply.status, 201, "{}", r.reply.text());
    eprintln!("product back: cart current, checkout paid");
}
