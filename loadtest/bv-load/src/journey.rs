//! The user journeys, as code: each a sequence of API calls with think
//! times between them, ids carried from one answer to the next step.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::client::{Answer, Connection};
use crate::record::{Outcome, Recorder};
use crate::scenario::JourneyKind;
use crate::seed::{Catalogue, WORDS};
use crate::token::Minter;

/// The `authorization` value of run `tag`'s admin.
pub fn admin_bearer(minter: &Minter, tag: &str) -> String {
    minter.bearer(&format!("load-admin-{}", tag.to_ascii_lowercase()), "admin")
}

/// What every journey of a run shares.
pub struct Ctx {
    /// `http://host:port` of the platform.
    pub base: String,
    /// Mints the customers' and the admin's tokens.
    pub minter: Minter,
    /// The run's tag (in SKUs, customer ids, idempotency keys).
    pub tag: String,
    /// The run's products.
    pub catalogue: Catalogue,
    /// Where the samples go.
    pub recorder: Arc<Recorder>,
    /// Pause between steps, uniform in this range.
    pub think_time: (Duration, Duration),
    /// A request's bound.
    pub request_timeout: Duration,
    /// Orders whose checkout was accepted (201), for the invariant check.
    pub accepted_orders: Mutex<Vec<String>>,
    random: AtomicU64,
}

impl Ctx {
    /// A context for a run tagged `tag`.
    pub fn new(
        base: &str,
        minter: Minter,
        tag: &str,
        catalogue: Catalogue,
        recorder: Arc<Recorder>,
        think_time: (Duration, Duration),
        request_timeout: Duration,
    ) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            minter,
            tag: tag.to_string(),
            catalogue,
            recorder,
            think_time,
            request_timeout,
            accepted_orders: Mutex::new(Vec::new()),
            random: AtomicU64::new(0x9E37_79B9_7F4A_7C15 ^ tag.len() as u64),
        }
    }

    /// A pseudo-random number (splitmix64; reproducible per run, good
    /// enough to pick products and think times).
    pub fn random(&self) -> u64 {
        let mut z = self
            .random
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn pick<'a, T>(&self, items: &'a [T]) -> &'a T {
        &items[(self.random() % items.len() as u64) as usize]
    }

    /// What every customer id of this run starts with (`load-<tag>-`).
    pub fn customer_prefix(&self) -> String {
        format!("load-{}-", self.tag.to_ascii_lowercase())
    }

    /// The subject of virtual user `user` of this run.
    pub fn customer(&self, user: u64) -> String {
        format!("{}{user}", self.customer_prefix())
    }

    /// The admin's `authorization` value.
    pub fn admin(&self) -> String {
        admin_bearer(&self.minter, &self.tag)
    }

    async fn think(&self) {
        let (min, max) = self.think_time;
        if max.is_zero() {
            return;
        }
        let span = (max - min).as_millis() as u64 + 1;
        let pause = min + Duration::from_millis(self.random() % span);
        tokio::time::sleep(pause).await;
    }
}

/// A virtual user's connection and steps.
struct User<'a> {
    ctx: &'a Ctx,
    conn: Option<Connection>,
    bearer: String,
    /// The address it claims in `x-forwarded-for` (10.0.0.0/8, one per
    /// user): behind a proxy the platform trusts, each user has its own
    /// rate-limit buckets, as real users do; otherwise it is ignored.
    forwarded_for: String,
}

impl<'a> User<'a> {
    fn new(ctx: &'a Ctx, user: u64, bearer: String) -> Self {
        let forwarded_for = format!(
            "10.{}.{}.{}",
            (user >> 16) & 255,
            (user >> 8) & 255,
            user & 255
        );
        Self {
            ctx,
            conn: None,
            bearer,
            forwarded_for,
        }
    }

    /// One request, recorded as `step`; `None` when it got no answer
    /// (the journey stops there).
    async fn step(
        &mut self,
        step: &'static str,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Option<Answer> {
        let begun = Instant::now();
        let recorder = &self.ctx.recorder;
        if self.conn.is_none() {
            match tokio::time::timeout(self.ctx.request_timeout, Connection::open(&self.ctx.base))
                .await
            {
                Ok(Ok(conn)) => self.conn = Some(conn),
                Ok(Err(_)) => {
                    recorder.record(step, begun, Outcome::Transport);
                    return None;
                }
                Err(_) => {
                    recorder.record(step, begun, Outcome::Timeout);
                    return None;
                }
            }
        }
        let conn = self.conn.as_mut()?;
        let mut headers: Vec<(&str, &str)> = extra.to_vec();
        headers.push(("x-forwarded-for", self.forwarded_for.as_str()));
        if !self.bearer.is_empty() {
            headers.push(("authorization", self.bearer.as_str()));
        }
        let sent = tokio::time::timeout(
            self.ctx.request_timeout,
            conn.send(method, path, &headers, body),
        )
        .await;
        match sent {
            Ok(Ok(answer)) => {
                recorder.record(step, begun, Outcome::of(&answer));
                Some(answer)
            }
            Ok(Err(_)) => {
                self.conn = None;
                recorder.record(step, begun, Outcome::Transport);
                None
            }
            Err(_) => {
                self.conn = None;
                recorder.record(step, begun, Outcome::Timeout);
                None
            }
        }
    }
}

/// Runs journey `kind` as virtual user `user`.
pub async fn run(ctx: &Ctx, kind: JourneyKind, user: u64) {
    match kind {
        JourneyKind::Browse => browse(ctx, user).await,
        JourneyKind::Shop => shop(ctx, user).await,
        JourneyKind::FlashSale => flash_sale(ctx, user).await,
        JourneyKind::Register => register(ctx, user).await,
        JourneyKind::EventBurst => event_burst(ctx, user).await,
    }
}

async fn browse(ctx: &Ctx, user: u64) {
    let mut u = User::new(
        ctx,
        user,
        ctx.minter.bearer(&ctx.customer(user), "customer"),
    );
    let Some(page) = u
        .step("list", "GET", "/api/products?limit=20", &[], None)
        .await
    else {
        return;
    };
    ctx.think().await;
    let query = format!("/api/products?q={}&limit=10", ctx.pick(WORDS));
    if u.step("search", "GET", &query, &[], None).await.is_none() {
        return;
    }
    ctx.think().await;
    // A product the list showed, when it showed one; otherwise one of the
    // run's own.
    let listed = page.json()["items"].as_array().and_then(|items| {
        items
            .first()
            .and_then(|p| p["id"].as_str().map(str::to_string))
    });
    let id = listed.unwrap_or_else(|| ctx.pick(&ctx.catalogue.products).clone());
    u.step("product", "GET", &format!("/api/products/{id}"), &[], None)
        .await;
}

async fn shop(ctx: &Ctx, user: u64) {
    let product = ctx.pick(&ctx.catalogue.products).clone();
    buy(ctx, user, &product, true).await;
}

async fn flash_sale(ctx: &Ctx, user: u64) {
    let product = ctx.catalogue.flash.clone();
    buy(ctx, user, &product, false).await;
}

/// View `product` (when `look`), add one to the cart, check out, look at
/// the order.
async fn buy(ctx: &Ctx, user: u64, product: &str, look: bool) {
    let customer = ctx.customer(user);
    let mut u = User::new(ctx, user, ctx.minter.bearer(&customer, "customer"));
    if look {
        if u.step(
            "product",
            "GET",
            &format!("/api/products/{product}"),
            &[],
            None,
        )
        .await
        .is_none()
        {
            return;
        }
        ctx.think().await;
    }
    let line = json!({ "productId": product, "quantity": 1 });
    match u
        .step(
            "add-to-cart",
            "POST",
            "/api/carts/me/items",
            &[],
            Some(&line),
        )
        .await
    {
        Some(a) if a.status < 300 => {}
        _ => return,
    }
    ctx.think().await;
    let key = format!("{}-checkout", customer);
    let card = json!({ "card": { "token": "tok_visa" } });
    let Some(answer) = u
        .step(
            "checkout",
            "POST",
            "/api/orders",
            &[("idempotency-key", &key)],
            Some(&card),
        )
        .await
    else {
        return;
    };
    if answer.status != 201 {
        return;
    }
    let Some(order) = answer.json()["orderId"].as_str().map(str::to_string) else {
        return;
    };
    ctx.accepted_orders.lock().unwrap().push(order.clone());
    ctx.think().await;
    u.step("order", "GET", &format!("/api/orders/{order}"), &[], None)
        .await;
}

async fn register(ctx: &Ctx, user: u64) {
    let mut u = User::new(ctx, user, String::new());
    let email = format!("{}@load.example", ctx.customer(user));
    let password = format!("Lr{:016x}!q", ctx.random());
    let credentials = json!({ "email": email, "password": password });
    match u
        .step(
            "register",
            "POST",
            "/api/auth/register",
            &[],
            Some(&credentials),
        )
        .await
    {
        Some(a) if a.status < 300 => {}
        _ => return,
    }
    ctx.think().await;
    u.step("login", "POST", "/api/auth/login", &[], Some(&credentials))
        .await;
}

async fn event_burst(ctx: &Ctx, user: u64) {
    let mut u = User::new(ctx, user, ctx.admin());
    for _ in 0..5 {
        let id = ctx.pick(&ctx.catalogue.products).clone();
        let path = format!("/api/inventory/{id}/restock");
        if u.step(
            "restock",
            "POST",
            &path,
            &[],
            Some(&json!({ "quantity": 1 })),
        )
        .await
        .is_none()
        {
            return;
        }
    }
}
