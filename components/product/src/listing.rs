//! `GET /api/products?…`: the query parameters, parsed, and the cursor.

use bv_service::{Currency, Problem, ProblemKind};

use crate::domain::{Category, ProductId};
use crate::list_sql::Filter;

/// Items per page when `limit` is not given.
pub const DEFAULT_LIMIT: i64 = 20;
/// The most items a page may hold.
pub const MAX_LIMIT: i64 = 100;

/// A listing request, every parameter parsed.
#[derive(Debug, Default)]
pub struct ListQuery {
    /// Items per page, 1..=[`MAX_LIMIT`].
    pub limit: i64,
    /// Where the page starts.
    pub cursor: Option<Cursor>,
    /// Full-text search of name and description.
    pub text: Option<String>,
    /// Only this category.
    pub category: Option<Category>,
    /// Only prices in this currency (required with a price bound: prices
    /// in different currencies do not compare).
    pub currency: Option<Currency>,
    /// Lowest price, minor units, inclusive.
    pub min_price: Option<i64>,
    /// Highest price, minor units, inclusive.
    pub max_price: Option<i64>,
    /// Only these products (canonical ids, comma-separated, each once): a
    /// caller that needs several known products asks once, not per id.
    pub ids: Option<String>,
}

/// The most ids one `ids` parameter may name (a page's worth).
pub const MAX_IDS: usize = MAX_LIMIT as usize;

/// A problem naming the query parameter at fault.
fn invalid(parameter: &str, detail: impl Into<String>) -> Problem {
    Problem::new(
        422,
        ProblemKind::InvalidParameter,
        "A query parameter has an invalid value",
        format!("{parameter}: {}", detail.into()),
    )
    .with("parameter", parameter)
}

fn amount(parameter: &str, value: &str) -> Result<i64, Problem> {
    value
        .parse::<i64>()
        .ok()
        .filter(|v| *v >= 0)
        .ok_or_else(|| {
            invalid(
                parameter,
                format!("must be an integer ≥ 0 (minor units), got {value:?}"),
            )
        })
}

impl ListQuery {
    /// Parses the query string (without `?`). Unknown and repeated
    /// parameters are refused rather than ignored: a typo must not
    /// silently widen the result.
    pub fn parse(query: &str) -> Result<Self, Problem> {
        let mut q = ListQuery {
            limit: DEFAULT_LIMIT,
            ..Default::default()
        };
        let mut seen: Vec<String> = Vec::new();
        let mut limit_given = false;
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            if seen.iter().any(|s| *s == name) {
                return Err(invalid(&name, "given more than once"));
            }
            seen.push(name.to_string());
            let value = value.as_ref();
            match name.as_ref() {
                "limit" => {
                    limit_given = true;
                    q.limit = value
                        .parse::<i64>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            invalid("limit", format!("must be an integer from 1 to {MAX_LIMIT}, got {value:?}"))
                        })?;
                }
                "cursor" => {
                    q.cursor = Some(Cursor::decode(value).ok_or_else(|| {
                        invalid("cursor", "not a cursor this API gave out (use the `next` of a previous page)")
                    })?);
                }
                "q" => {
                    let text = value.trim();
                    let len = text.chars().count();
                    if !(1..=200).contains(&len) {
                        return Err(invalid("q", format!("must be 1–200 characters, got {len}")));
                    }
                    q.text = Some(text.to_string());
                }
                "category" => {
                    q.category =
                        Some(Category::try_from(value.to_string()).map_err(|e| invalid("category", e))?);
                }
                "currency" => {
                    q.currency = Some(Currency::parse(value).ok_or_else(|| {
                        invalid("currency", format!("not a currency this shop prices in: {value:?}"))
                    })?);
                }
                "ids" => q.ids = Some(ids(value)?),
                "min_price" => q.min_price = Some(amount("min_price", value)?),
                "max_price" => q.max_price = Some(amount("max_price", value)?),
                other => {
                    return Err(invalid(
                        other,
                        "unknown parameter (known: limit, cursor, q, category, min_price, max_price, currency, ids)",
                    ))
                }
            }
        }
        if q.currency.is_none() {
            for (parameter, bound) in [("min_price", q.min_price), ("max_price", q.max_price)] {
                if bound.is_some() {
                    return Err(invalid(
                        parameter,
                        "needs `currency`: prices in different currencies do not compare",
                    ));
                }
            }
        }
        if let (Some(ids), false) = (&q.ids, limit_given) {
            // Every product asked for fits on the one page.
            q.limit = ids.split(',').count() as i64;
        }
        if let (Some(min), Some(max)) = (q.min_price, q.max_price) {
            if min > max {
                return Err(invalid(
                    "max_price",
                    format!("must be ≥ min_price ({min}), got {max}"),
                ));
            }
        }
        Ok(q)
    }

    /// The SQL filter of this page; one row more than `limit` is read to
    /// know whether a next page exists.
    pub fn filter(&self) -> Filter<'_> {
        Filter {
            text: self.text.as_deref(),
            category: self.category.as_ref().map(Category::as_str),
            currency: self.currency.map(Currency::code),
            min_price: self.min_price,
            max_price: self.max_price,
            ids: self.ids.as_deref(),
            after: self.cursor.map(|c| c.0),
            limit: self.limit + 1,
        }
    }

    /// The query string of the page after `last`: the same parameters with
    /// its cursor.
    pub fn next_query(&self, last: Cursor) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        s.append_pair("limit", &self.limit.to_string());
        if let Some(text) = &self.text {
            s.append_pair("q", text);
        }
        if let Some(category) = &self.category {
            s.append_pair("category", category.as_str());
        }
        if let Some(currency) = self.currency {
            s.append_pair("currency", currency.code());
        }
        if let Some(min) = self.min_price {
            s.append_pair("min_price", &min.to_string());
        }
        if let Some(max) = self.max_price {
            s.append_pair("max_price", &max.to_string());
        }
        if let Some(ids) = &self.ids {
            s.append_pair("ids", ids);
        }
        s.append_pair("cursor", &last.encode());
        s.finish()
    }
}

/// Parses `ids`: 1 to [`MAX_IDS`] product ids, comma-separated, into
/// their canonical spelling, each once.
fn ids(value: &str) -> Result<String, Problem> {
    let mut canonical: Vec<String> = Vec::new();
    for segment in value.split(',') {
        let id = ProductId::parse(segment.trim()).ok_or_else(|| {
            invalid(
                "ids",
                format!("not a product id: {segment:?} (ids are UUIDs, comma-separated)"),
            )
        })?;
        let id = id.to_string();
        if !canonical.contains(&id) {
            canonical.push(id);
        }
    }
    if canonical.len() > MAX_IDS {
        return Err(invalid(
            "ids",
            format!("at most {MAX_IDS} ids at once, got {}", canonical.len()),
        ));
    }
    Ok(canonical.join(","))
}

/// A position in the listing: the `seq` of the last item of a page.
/// Clients get it opaque (`c` and 16 hex digits) and must not build one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(pub i64);

impl Cursor {
    /// The text given to clients.
    pub fn encode(self) -> String {
        format!("c{:016x}", self.0)
    }

    /// A cursor [`Cursor::encode`] made; `None` for anything else.
    pub fn decode(text: &str) -> Option<Self> {
        let hex = text.strip_prefix('c').filter(|h| h.len() == 16)?;
        let seq = u64::from_str_radix(hex, 16).ok()?;
        i64::try_from(seq).ok().map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parameter(query: &str) -> String {
        let p = ListQuery::parse(query).unwrap_err();
        assert_eq!(p.status, 422);
        p.extensions["parameter"].as_str().unwrap().to_string()
    }

    #[test]
    fn parses_and_names_the_parameter_at_fault() {
        let q = ListQuery::parse(
            "limit=5&q=red+mug&category=mugs&currency=EUR&min_price=0&max_price=900",
        )
        .unwrap();
        assert_eq!((q.limit, q.text.as_deref()), (5, Some("red mug")));
        assert_eq!(ListQuery::parse("").unwrap().limit, DEFAULT_LIMIT);
        assert_eq!(parameter("limit=0"), "limit");
        assert_eq!(parameter("limit=101"), "limit");
        assert_eq!(parameter("limit=x"), "limit");
        assert_eq!(parameter("cursor=zz"), "cursor");
        assert_eq!(parameter("category=Mugs"), "category");
        assert_eq!(parameter("currency=XXX"), "currency");
        assert_eq!(parameter("min_price=-1&currency=EUR"), "min_price");
        assert_eq!(parameter("min_price=1"), "min_price");
        assert_eq!(
            parameter("currency=EUR&min_price=9&max_price=1"),
            "max_price"
        );
        assert_eq!(parameter("q="), "q");
        assert_eq!(parameter("colour=red"), "colour");
        assert_eq!(parameter("limit=1&limit=2"), "limit");
        assert_eq!(parameter("ids=nope"), "ids");
        assert_eq!(parameter("ids="), "ids");
        let many: Vec<String> = (0..=MAX_IDS)
            .map(|i| format!("5eed0000-0000-4000-8000-{i:012}"))
            .collect();
        assert_eq!(parameter(&format!("ids={}", many.join(","))), "ids");
    }

    #[test]
    fn ids_are_canonical_once_each_and_fit_one_page() {
        let a = "5EED0000-0000-4000-8000-000000000001";
        let b = "5eed0000-0000-4000-8000-000000000002";
        let q = ListQuery::parse(&format!("ids={a},{b},%20{a}")).unwrap();
        assert_eq!(
            q.ids.as_deref(),
            Some("5eed0000-0000-4000-8000-000000000001,5eed0000-0000-4000-8000-000000000002")
        );
        assert_eq!(q.limit, 2);
        assert_eq!(
            ListQuery::parse(&format!("ids={a}&limit=1")).unwrap().limit,
            1
        );
        assert!(q.next_query(Cursor(1)).contains("ids=5eed"));
    }

    #[test]
    fn cursors_round_trip_and_the_next_query_keeps_the_filters() {
        let c = Cursor(42);
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("c"), None);
        let q = ListQuery::parse("q=red%20mug&category=mugs&limit=2").unwrap();
        assert_eq!(
            q.next_query(c),
            "limit=2&q=red+mug&category=mugs&cursor=c000000000000002a"
        );
    }
}
