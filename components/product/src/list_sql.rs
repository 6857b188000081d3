//! The listing query, as SQL with its parameters.
//!
//! Plain Rust with no dependencies, so that the integration tests include
//! this very file and `EXPLAIN` exactly the statements the component runs
//! (`triggers/bv/tests/it/commerce_product.rs`).
//!
//! Only the conditions asked for are in the statement (no
//! `$n IS NULL OR …`), so each shape of query gets a plan that uses the
//! index made for it:
//!
//! | condition | index (all `WHERE deleted_at IS NULL`) |
//! |---|---|
//! | none (the pages) | `products_page (seq)` |
//! | `category` | `products_category (category, seq)` |
//! | `currency`, price range | `products_price (currency, price_amount)` |
//! | `q` | `products_search` (GIN on the `search` tsvector) |
//! | `ids` | the primary key |

/// What a page of the listing is filtered by and starts after.
#[derive(Debug, Clone, Default)]
pub struct Filter<'a> {
    /// Full-text search of name and description (web search syntax).
    pub text: Option<&'a str>,
    /// Exact category.
    pub category: Option<&'a str>,
    /// Exact currency code.
    pub currency: Option<&'a str>,
    /// Lowest price, minor units, inclusive.
    pub min_price: Option<i64>,
    /// Highest price, minor units, inclusive.
    pub max_price: Option<i64>,
    /// Only these ids: UUIDs, comma-separated.
    pub ids: Option<&'a str>,
    /// Only rows after this `seq` (the cursor).
    pub after: Option<i64>,
    /// At most this many rows.
    pub limit: i64,
}

/// A bound parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    /// Bound as `text`.
    Text(String),
    /// Bound as `bigint`.
    Int(i64),
}

/// `SELECT {columns} FROM product.products` with the filter's conditions,
/// in listing order, and the parameters to bind.
pub fn select(columns: &str, filter: &Filter<'_>) -> (String, Vec<Param>) {
    let mut sql = format!("SELECT {columns} FROM product.products WHERE deleted_at IS NULL");
    let mut params = Vec::new();
    let mut condition = |template: &str, param: Param| {
        params.push(param);
        sql += " AND ";
        sql += &template.replace('?', &format!("${}", params.len()));
    };
    if let Some(category) = filter.category {
        condition("category = ?::text", Param::Text(category.into()));
    }
    if let Some(currency) = filter.currency {
        condition("currency = ?::text", Param::Text(currency.into()));
    }
    if let Some(min) = filter.min_price {
        condition("price_amount >= ?::bigint", Param::Int(min));
    }
    if let Some(max) = filter.max_price {
        condition("price_amount <= ?::bigint", Param::Int(max));
    }
    if let Some(ids) = filter.ids {
        condition(
            "id = ANY (string_to_array(?::text, ',')::uuid[])",
            Param::Text(ids.into()),
        );
    }
    if let Some(text) = filter.text {
        condition(
            "search @@ websearch_to_tsquery('english', ?::text)",
            Param::Text(text.into()),
        );
    }
    if let Some(after) = filter.after {
        condition("seq > ?::bigint", Param::Int(after));
    }
    params.push(Param::Int(filter.limit));
    sql += &format!(" ORDER BY seq LIMIT ${}::bigint", params.len());
    (sql, params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_conditions_asked_for() {
        let (sql, params) = select(
            "id",
            &Filter {
                limit: 21,
                ..Default::default()
            },
        );
        assert_eq!(
            sql,
            "SELECT id FROM product.products WHERE deleted_at IS NULL ORDER BY seq LIMIT $1::bigint"
        );
        assert_eq!(params, vec![Param::Int(21)]);
        let filter = Filter {
            category: Some("mugs"),
            text: Some("red"),
            after: Some(7),
            limit: 3,
            ..Default::default()
        };
        let (sql, params) = select("id", &filter);
        assert!(sql.contains("category = $1::text AND search @@ websearch_to_tsquery('english', $2::text) AND seq > $3::bigint ORDER BY seq LIMIT $4::bigint"), "{sql}");
        assert_eq!(params.len(), 4);
    }
}
