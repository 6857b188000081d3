//! The data a run brings: products of its own (SKUs carry the run's tag),
//! their stock, and one flash-sale product with little stock. Runs never
//! share stock, so one run's invariants are not disturbed by another's.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::json;

use crate::client::Connection;
use crate::scenario::Seed;

/// Words the seeded names carry, for the search step.
pub const WORDS: &[&str] = &[
    "teapot", "lantern", "notebook", "kettle", "blanket", "compass",
];

/// The run's catalogue.
#[derive(Clone, Debug)]
pub struct Catalogue {
    /// Product ids for browsing and shopping.
    pub products: Vec<String>,
    /// The flash-sale product's id.
    pub flash: String,
}

impl Catalogue {
    /// Every product of the run, the flash-sale one last.
    pub fn all(&self) -> Vec<String> {
        let mut all = self.products.clone();
        all.push(self.flash.clone());
        all
    }
}

/// Creates and stocks the run's products as `admin` (an `authorization`
/// value) through the public API.
pub async fn seed(base: &str, admin: &str, tag: &str, seed: &Seed) -> anyhow::Result<Catalogue> {
    let mut conn = Connection::open(base).await?;
    let mut products = Vec::new();
    for i in 0..seed.products {
        let word = WORDS[i % WORDS.len()];
        let id = product(
            &mut conn,
            admin,
            tag,
            &format!("{i}"),
            word,
            1_000 + 100 * i as i64,
        )
        .await?;
        restock(&mut conn, admin, &id, seed.stock).await?;
        products.push(id);
    }
    let flash = product(&mut conn, admin, tag, "FLASH", "flash", 500).await?;
    restock(&mut conn, admin, &flash, seed.flash_stock).await?;
    Ok(Catalogue { products, flash })
}

async fn product(
    conn: &mut Connection,
    admin: &str,
    tag: &str,
    suffix: &str,
    word: &str,
    price: i64,
) -> anyhow::Result<String> {
    let body = json!({
        "sku": format!("LOAD-{tag}-{suffix}"),
        "name": format!("Load {word} {suffix} ({tag})"),
        "description": format!("A {word} made for load run {tag}."),
        "category": "load-test",
        "price": { "amount": price, "currency": "EUR" },
    });
    let answer = conn
        .send(
            "POST",
            "/api/products",
            &[("authorization", admin)],
            Some(&body),
        )
        .await?;
    if answer.status != 201 {
        bail!(
            "seeding: POST /api/products answered {}: {}",
            answer.status,
            answer.text()
        );
    }
    answer.json()["id"]
        .as_str()
        .map(str::to_string)
        .context("seeding: the new product has no id")
}

/// Restocks `id` once its stock record exists (the inventory makes it
/// from the product's event, a moment after the product).
async fn restock(conn: &mut Connection, admin: &str, id: &str, units: i64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let path = format!("/api/inventory/{id}/restock");
    loop {
        let answer = conn
            .send(
                "POST",
                &path,
                &[("authorization", admin)],
                Some(&json!({ "quantity": units })),
            )
            .await?;
        match answer.status {
            200 => return Ok(()),
            404 if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            status => bail!("seeding: POST {path} answered {status}: {}", answer.text()),
        }
    }
}
