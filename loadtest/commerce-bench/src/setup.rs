//! `setup`: makes the demo catalogue ready to sell — the catalogue and its
//! stock records exist, and every product has plenty of stock — and
//! prints the id of the first product (the one the product GET is
//! loaded on).

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

use bv_load::client::Connection;

/// `setup` options.
#[derive(clap::Args)]
pub struct Args {
    /// The app, e.g. http://127.0.0.1:3400.
    #[arg(long)]
    url: String,
    /// Units added to every product's stock.
    #[arg(long, default_value_t = 100_000)]
    restock: i64,
    /// The seed of the app's signing key (see `auth-keys`): restocking
    /// takes an administrator's token.
    #[arg(long, env = "COMMERCE_BENCH_AUTH_SEED", hide_env_values = true)]
    auth_seed: String,
    /// Longest wait for the catalogue and its stock records.
    #[arg(long, default_value_t = 60)]
    timeout_s: u64,
}

/// A product of the catalogue, as the driver needs it.
#[derive(Debug, Clone)]
pub struct Product {
    /// Its id.
    pub id: String,
    /// Its currency (a cart holds one).
    pub currency: String,
}

/// The first page of the catalogue (up to 100 products), in the currency
/// of its first product.
pub async fn products(conn: &mut Connection) -> anyhow::Result<Vec<Product>> {
    let answer = conn
        .send("GET", "/api/products?limit=100", &[], None)
        .await?;
    if answer.status != 200 {
        bail!(
            "GET /api/products answered {}: {}",
            answer.status,
            answer.text()
        );
    }
    let body = answer.json();
    let all: Vec<Product> = body["items"]
        .as_array()
        .context("GET /api/products: no `items`")?
        .iter()
        .map(|p| {
            Ok(Product {
                id: p["id"].as_str().context("a product without `id`")?.into(),
                currency: p["price"]["currency"]
                    .as_str()
                    .context("a product without `price.currency`")?
                    .into(),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let Some(first) = all.first() else {
        bail!("the catalogue is empty");
    };
    let currency = first.currency.clone();
    Ok(all.into_iter().filter(|p| p.currency == currency).collect())
}

/// Waits for the catalogue and its stock records, then restocks.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let admin = crate::token::minter(&args.auth_seed)?.bearer("bench-admin", "admin");
    let mut conn = Connection::open(&args.url).await?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    // The first request migrates the catalogue and adds the demo products.
    let products = loop {
        match products(&mut conn).await {
            Ok(p) => break p,
            Err(e) if Instant::now() < deadline => {
                eprintln!("setup: waiting for the catalogue ({e:#})");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    };
    for p in &products {
        // The projector opens the stock record from product.created.
        loop {
            let path = format!("/api/inventory/{}", p.id);
            let answer = conn.send("GET", &path, &[], None).await?;
            if answer.status == 200 {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "no stock record for {} after {} s: {} {}",
                    p.id,
                    args.timeout_s,
                    answer.status,
                    answer.text()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let path = format!("/api/inventory/{}/restock", p.id);
        let body = json!({ "quantity": args.restock });
        let answer = conn
            .send(
                "POST",
                &path,
                &[("authorization", admin.as_str())],
                Some(&body),
            )
            .await?;
        if answer.status != 200 {
            bail!("POST {path} answered {}: {}", answer.status, answer.text());
        }
        let stock: Value = answer.json();
        eprintln!(
            "setup: {} restocked, {} available",
            p.id, stock["available"]
        );
    }
    println!("{}", products[0].id);
    Ok(())
}
