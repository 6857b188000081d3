//! The products table: reads, and writes that publish their event in the
//! same transaction.

use std::sync::atomic::AtomicBool;

use bv_events_guest::{CloudEvent, Transaction};
use bv_service::{migrate, Currency, Money, Problem, ProblemKind, Trace};
use spin_sdk::pg::{Connection, Decode, ParameterValue, Row};

use crate::domain::{NewProduct, Product, ProductId, Replacement, Sku};
use crate::list_sql::{self, Param};
use crate::listing::ListQuery;
use crate::{events, migrations};

/// The columns [`decode`] reads, in its order.
const COLUMNS: &str = r#"id::text, sku, name, description, category, price_amount, currency, version, seq,
    to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"#;

static MIGRATED: AtomicBool = AtomicBool::new(false);

/// A precondition the request made (`If-Match`) that the product does not
/// meet.
fn stale(etag: &str) -> Problem {
    Problem::new(
        412,
        ProblemKind::PreconditionFailed,
        "The product changed",
        format!("If-Match does not match the current ETag {etag}: fetch the product again"),
    )
    .with("etag", etag)
}

fn not_found(id: ProductId) -> Problem {
    Problem::not_found(format!("no product {id}"))
}

fn sku_taken(sku: &Sku) -> Problem {
    Problem::new(
        409,
        ProblemKind::SkuTaken,
        "The SKU is taken",
        format!("another product has SKU {}", sku.as_str()),
    )
    .with("sku", sku.as_str())
}

fn publish_failed(e: bv_events_guest::Error) -> Problem {
    // Our own events are built from parsed fields: one that breaks its
    // schema is a bug here, not the client's (500); a database gone away
    // mid-transaction is 503.
    Problem::from(e)
}

/// The database, ready for this component (event log and migrations
/// applied).
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Connects to `db_url` and brings the schema up to date (once per
    /// instance).
    pub async fn open() -> Result<Self, Problem> {
        let url = spin_sdk::variables::get("db_url")
            .await
            .map_err(|e| Problem::internal(format!("variable db_url: {e:?}")))?;
        let conn = Connection::open(url).await.map_err(|e| {
            eprintln!("product: connecting to the database: {e}");
            Problem::unavailable("the catalogue database is unreachable")
        })?;
        bv_service::event_log::ensure(&conn).await?;
        migrate(&conn, "product", migrations::MIGRATIONS, &MIGRATED).await?;
        Ok(Self { conn })
    }

    /// A live product.
    pub async fn get(&self, id: ProductId) -> Result<Product, Problem> {
        let sql = format!("SELECT {COLUMNS} FROM product.products WHERE id = $1::text::uuid AND deleted_at IS NULL");
        let rows = self
            .conn
            .query(sql, vec![text(&id.to_string())])
            .await?
            .collect()
            .await?;
        match rows.first() {
            Some(row) => decode(row),
            None => Err(not_found(id)),
        }
    }

    /// One page of the listing, with `limit + 1` rows at most (the extra
    /// one tells that there is a next page).
    pub async fn list(&self, query: &ListQuery) -> Result<Vec<Product>, Problem> {
        let (sql, params) = list_sql::select(COLUMNS, &query.filter());
        let params = params
            .into_iter()
            .map(|p| match p {
                Param::Text(s) => ParameterValue::Str(s),
                Param::Int(n) => ParameterValue::Int64(n),
            })
            .collect::<Vec<_>>();
        let rows = self.conn.query(sql, params).await?.collect().await?;
        rows.iter().map(decode).collect()
    }

    /// Adds a product and publishes `product.created` (in `trace`).
    pub async fn create(&self, new: NewProduct, trace: &Trace) -> Result<Product, Problem> {
        let tx = begin(&self.conn).await?;
        let result = async {
            let sql = format!(
                "INSERT INTO product.products (id, sku, name, description, category, price_amount, currency)
                 VALUES ($1::text::uuid, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (sku) WHERE deleted_at IS NULL DO NOTHING
                 RETURNING {COLUMNS}"
            );
            let description: String = new.description.map(String::from).unwrap_or_default();
            let params = vec![
                text(&ProductId::generate().to_string()),
                text(new.sku.as_str()),
                text(new.name.as_str()),
                text(&description),
                text(new.category.as_str()),
                ParameterValue::Int64(new.price.amount()),
                text(new.price.currency().code()),
            ];
            let product = match one(&tx, sql, params).await? {
                Some(p) => p,
                None => return Err(sku_taken(&new.sku)),
            };
            publish(&tx, events::created(&product), trace).await?;
            Ok(product)
        }
        .await;
        settle(tx, result).await
    }

    /// Replaces the mutable fields of a live product whose ETag is
    /// `if_match` (`*`: any), publishing `product.updated` with what
    /// changed. Nothing changing is not a change: no new version, no
    /// event.
    pub async fn replace(
        &self,
        id: ProductId,
        if_match: &str,
        new: Replacement,
        trace: &Trace,
    ) -> Result<Product, Problem> {
        let tx = begin(&self.conn).await?;
        let result = async {
            let before = locked(&tx, id).await?;
            check_precondition(&before, Some(if_match))?;
            if let Some(sku) = &new.sku {
                if sku.as_str() != before.sku {
                    return Err(Problem::invalid_field(
                        "sku",
                        format!("a product's SKU cannot change (it is {})", before.sku),
                    ));
                }
            }
            let description: String = new.description.map(String::from).unwrap_or_default();
            let candidate = Product {
                name: String::from(new.name.clone()),
                description: description.clone(),
                category: String::from(new.category.clone()),
                price: new.price,
                ..before.clone()
            };
            if events::updated(&before, &candidate).is_none() {
                return Ok(before);
            }
            let sql = format!(
                "UPDATE product.products
                 SET name = $2, description = $3, category = $4, price_amount = $5, currency = $6,
                     version = version + 1, updated_at = now()
                 WHERE id = $1::text::uuid
                 RETURNING {COLUMNS}"
            );
            let params = vec![
                text(&id.to_string()),
                text(new.name.as_str()),
                text(&description),
                text(new.category.as_str()),
                ParameterValue::Int64(new.price.amount()),
                text(new.price.currency().code()),
            ];
            let after = one(&tx, sql, params).await?.ok_or_else(|| not_found(id))?;
            if let Some(event) = events::updated(&before, &after) {
                publish(&tx, event, trace).await?;
            }
            Ok(after)
        }
        .await;
        settle(tx, result).await
    }

    /// Withdraws a live product (when `if_match`, only at that ETag),
    /// publishing `product.deleted`. The row stays, marked deleted.
    pub async fn delete(
        &self,
        id: ProductId,
        if_match: Option<&str>,
        trace: &Trace,
    ) -> Result<(), Problem> {
        let tx = begin(&self.conn).await?;
        let result = async {
            let before = locked(&tx, id).await?;
            check_precondition(&before, if_match)?;
            let sql = format!(
                "UPDATE product.products
                 SET deleted_at = now(), version = version + 1, updated_at = now()
                 WHERE id = $1::text::uuid
                 RETURNING {COLUMNS}"
            );
            let after = one(&tx, sql, vec![text(&id.to_string())])
                .await?
                .ok_or_else(|| not_found(id))?;
            publish(&tx, events::deleted(&after), trace).await
        }
        .await;
        settle(tx, result).await
    }
}

/// `If-Match` against the product's ETag: `*` or one of the listed tags,
/// compared strongly (a weak tag never matches).
fn check_precondition(product: &Product, if_match: Option<&str>) -> Result<(), Problem> {
    let Some(header) = if_match else {
        return Ok(());
    };
    let etag = product.etag();
    let matches = header.trim() == "*" || header.split(',').any(|t| t.trim() == etag);
    if matches {
        Ok(())
    } else {
        Err(stale(&etag))
    }
}

/// A live product, locked until the transaction ends so that concurrent
/// writers see each other's versions.
async fn locked(tx: &Transaction<'_>, id: ProductId) -> Result<Product, Problem> {
    let sql = format!(
        "SELECT {COLUMNS} FROM product.products WHERE id = $1::text::uuid AND deleted_at IS NULL FOR UPDATE"
    );
    one(tx, sql, vec![text(&id.to_string())])
        .await?
        .ok_or_else(|| not_found(id))
}

async fn begin(conn: &Connection) -> Result<Transaction<'_>, Problem> {
    Transaction::begin(conn).await.map_err(Problem::from)
}

/// Commits on `Ok`, rolls back on `Err` (a refusal included: a rejected
/// request changes nothing).
async fn settle<T>(tx: Transaction<'_>, result: Result<T, Problem>) -> Result<T, Problem> {
    match result {
        Ok(value) => {
            tx.commit().await?;
            Ok(value)
        }
        Err(problem) => {
            if let Err(e) = tx.rollback().await {
                eprintln!("product: rolling back: {e}");
            }
            Err(problem)
        }
    }
}

/// Publishes `event` in the trace of the request that made the change.
async fn publish(tx: &Transaction<'_>, event: CloudEvent, trace: &Trace) -> Result<(), Problem> {
    tx.publish(&event.traced(trace.traceparent()))
        .await
        .map_err(publish_failed)
}

/// The first row of a statement's result, decoded.
async fn one(
    tx: &Transaction<'_>,
    sql: String,
    params: Vec<ParameterValue>,
) -> Result<Option<Product>, Problem> {
    let rows = tx.query(sql, params).await?.collect().await?;
    rows.first().map(decode).transpose()
}

fn text(s: &str) -> ParameterValue {
    ParameterValue::Str(s.to_string())
}

/// A row of [`COLUMNS`].
fn decode(row: &Row) -> Result<Product, Problem> {
    let bad = |e: spin_sdk::pg::Error| Problem::internal(format!("decoding a product row: {e}"));
    let s = |i: usize| String::decode(&row[i]).map_err(bad);
    let n = |i: usize| i64::decode(&row[i]).map_err(bad);
    let currency = s(6)?;
    let currency = Currency::parse(&currency)
        .ok_or_else(|| Problem::internal(format!("stored currency {currency:?}")))?;
    Ok(Product {
        id: s(0)?,
        sku: s(1)?,
        name: s(2)?,
        description: s(3)?,
        category: s(4)?,
        price: Money::new(n(5)?, currency).map_err(Problem::internal)?,
        version: n(7)?,
        seq: n(8)?,
        created_at: s(9)?,
        updated_at: s(10)?,
    })
}
