//! The cart as the API shows it: every line priced from the product
//! service now, never from what was stored or sent.

use bv_service::{Money, Problem};
use chrono::{DateTime, SecondsFormat};
use serde::Serialize;

use crate::catalog::{Catalog, Lookup, Product};
use crate::domain::ProductId;
use crate::identity::CustomerId;
use crate::store::StoredCart;

/// The `Warning` header of a degraded cart.
pub const STALE_WARNING: &str = "111 - \"stale product data: the product service is unavailable\"";

/// `GET /api/carts/me`. Amounts are integer minor units of `currency`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CartView {
    customer_id: String,
    items: Vec<Line>,
    /// The sum of the line totals.
    total: i64,
    /// `null` while the cart is empty.
    currency: Option<&'static str>,
    /// RFC 3339; `null` while the cart is empty.
    updated_at: Option<String>,
    /// Lines whose product the product service no longer has (or now
    /// prices in another currency): kept until the customer removes them,
    /// but not priced or counted in the total.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    unavailable: Vec<ProductId>,
    /// Set when some lines are priced from the last copy of their product
    /// the cart knows (`stale` lines), because the product service could
    /// not be asked.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    degraded: bool,
}

impl CartView {
    /// Whether some lines are stale.
    pub fn degraded(&self) -> bool {
        self.degraded
    }
}

/// One line of the cart.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Line {
    product_id: ProductId,
    sku: String,
    name: String,
    unit_price: Money,
    quantity: i64,
    line_total: i64,
    /// Name and price are the last known ones, not current.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stale: bool,
}

/// Prices `cart`'s lines. Products this request already looked up (in
/// `known`) are not looked up again.
pub async fn render(
    catalog: &Catalog<'_>,
    customer: &CustomerId,
    cart: StoredCart,
    known: &[Product],
) -> Result<CartView, Problem> {
    let missing: Vec<ProductId> = cart
        .lines
        .keys()
        .filter(|id| !known.iter().any(|p| &p.id == *id))
        .cloned()
        .collect();
    let looked_up = catalog.lookup_many(&missing).await?;
    let mut products: Vec<Product> = known.to_vec();
    products.extend(looked_up.into_iter().filter_map(|l| match l {
        Lookup::Found(p) => Some(p),
        Lookup::Unknown => None,
    }));
    let mut view = CartView {
        customer_id: customer.to_string(),
        items: Vec::new(),
        total: 0,
        currency: cart.currency.map(|c| c.code()),
        updated_at: cart.updated_at_ms.and_then(rfc3339),
        unavailable: Vec::new(),
        degraded: false,
    };
    for (id, quantity) in cart.lines {
        let product = products
            .iter()
            .find(|p| p.id == id && Some(p.price.currency()) == cart.currency);
        let Some(product) = product else {
            view.unavailable.push(id);
            continue;
        };
        let line_total = product
            .price
            .times(quantity)
            .ok_or_else(|| Problem::internal(format!("line total of {id} overflows")))?
            .amount();
        view.total = view
            .total
            .checked_add(line_total)
            .ok_or_else(|| Problem::internal("cart total overflows"))?;
        view.items.push(Line {
            product_id: id,
            sku: product.sku.clone(),
            name: product.name.clone(),
            unit_price: product.price,
            quantity,
            line_total,
            stale: product.stale,
        });
        view.degraded |= product.stale;
    }
    Ok(view)
}

fn rfc3339(ms: i64) -> Option<String> {
    DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
}
