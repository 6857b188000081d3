//! The HTTP API: `/api/notifications/...`.

use bv_auth::Principal;
use bv_service::{json, read_json, Problem, Reply};
use serde::Deserialize;
use serde_json::json;
use spin_sdk::http::Request;

use crate::deliver;
use crate::store::{self, delivery_columns, notification, notification_columns, rows, text};

const MAX_BODY_BYTES: usize = 8 * 1024;
const MAX_URL_CHARS: usize = 2_000;

/// `limit` (1-100, default 20), and for administrators `customer`.
fn params(query: &str, who: &Principal) -> Result<(i64, String), Problem> {
    let mut limit = None;
    let mut customer = None;
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            "limit" if limit.is_none() => {
                limit = Some(
                    value
                        .parse::<i64>()
                        .ok()
                        .filter(|n| (1..=100).contains(n))
                        .ok_or_else(|| {
                            Problem::invalid_parameter("limit", "a whole number from 1 to 100")
                        })?,
                )
            }
            "customer" if customer.is_none() => {
                if bv_auth::Subject::parse(&value).is_none() {
                    return Err(Problem::invalid_parameter("customer", "not a user id"));
                }
                if !who.is_admin() && value != who.subject.as_str() {
                    return Err(bv_auth::guest::forbidden(
                        "only administrators read another customer's notifications",
                    ));
                }
                customer = Some(value.into_owned());
            }
            "limit" | "customer" => {
                return Err(Problem::invalid_parameter(&name, "given more than once"))
            }
            other => {
                return Err(Problem::invalid_parameter(
                    other,
                    "unknown parameter (known: limit, customer)",
                ))
            }
        }
    }
    Ok((
        limit.unwrap_or(20),
        customer.unwrap_or_else(|| who.subject.to_string()),
    ))
}

/// `GET /api/notifications`: the newest first, and how many are unread.
pub async fn inbox(who: &Principal, query: &str) -> Result<Reply, Problem> {
    let (limit, customer) = params(query, who)?;
    let conn = store::open().await?;
    let list = rows(
        &conn,
        &format!(
            "SELECT {} FROM notifications.inbox WHERE customer_id = $1 \
             ORDER BY created_at DESC, id LIMIT $2",
            notification_columns()
        ),
        vec![text(&customer), spin_sdk::pg::ParameterValue::Int64(limit)],
    )
    .await?
    .iter()
    .map(notification)
    .collect::<Result<Vec<_>, _>>()?;
    let unread = rows(
        &conn,
        "SELECT count(*) AS n FROM notifications.inbox WHERE customer_id = $1 AND read_at IS NULL",
        vec![text(&customer)],
    )
    .await?;
    let unread: i64 = unread.first().map_or(Ok(0), |r| store::col(r, "n"))?;
    Ok(json(200, &json!({"notifications": list, "unread": unread})))
}

/// `POST /api/notifications/{id}/read`.
pub async fn read(id: &str, who: &Principal) -> Result<Reply, Problem> {
    let not_found = || Problem::not_found(format!("no notification {id}"));
    if !is_uuid(id) {
        return Err(not_found());
    }
    let conn = store::open().await?;
    let marked = rows(
        &conn,
        &format!(
            "UPDATE notifications.inbox SET read_at = coalesce(read_at, now()) \
             WHERE id = $1::text::uuid AND customer_id = $2 RETURNING {}",
            notification_columns()
        ),
        vec![text(id), text(who.subject.as_str())],
    )
    .await?;
    Ok(json(
        200,
        &notification(marked.first().ok_or_else(not_found)?)?,
    ))
}

fn is_uuid(raw: &str) -> bool {
    raw.len() == 36
        && raw.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn preferences_body(prefs: &store::Preferences, secret_shown: bool) -> serde_json::Value {
    let mut body = json!({
        "inApp": prefs.in_app,
        "webhookUrl": prefs.webhook_url,
        "email": prefs.email,
    });
    if secret_shown {
        body["webhookSecret"] = json!(prefs.webhook_secret);
    }
    body
}

/// `GET /api/notifications/preferences` (the secret is shown only when it
/// is made).
pub async fn preferences(who: &Principal) -> Result<Reply, Problem> {
    let conn = store::open().await?;
    let prefs = store::preferences(&conn, who.subject.as_str()).await?;
    Ok(json(200, &preferences_body(&prefs, false)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewPreferences {
    in_app: bool,
    webhook_url: Option<String>,
    email: Option<String>,
    #[serde(default)]
    rotate_secret: bool,
}

/// An email address: `local@domain`, at most 254 characters, no spaces or
/// control characters (the mail server checks the rest).
fn email_address(raw: &str) -> Result<String, Problem> {
    let bad = |why: &str| Problem::invalid_field("email", why.to_owned());
    if raw.chars().count() > 254 {
        return Err(bad("at most 254 characters"));
    }
    if raw
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
    {
        return Err(bad("no spaces, control characters or angle brackets"));
    }
    // A dot inside the domain, not at either end (as the API document's
    // pattern says).
    let dotted = |domain: &str| {
        domain
            .char_indices()
            .any(|(i, c)| c == '.' && i > 0 && i + 1 < domain.len())
    };
    match raw.split_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.contains('@') && dotted(domain) => {
            Ok(raw.to_owned())
        }
        _ => Err(bad("must look like name@example.com")),
    }
}

/// A webhook URL: absolute `http` or `https`, with a host, no user info.
fn webhook_url(raw: &str) -> Result<String, Problem> {
    let bad = |why: &str| Problem::invalid_field("webhookUrl", why.to_owned());
    if raw.chars().count() > MAX_URL_CHARS {
        return Err(bad("at most 2,000 characters"));
    }
    let uri: http::Uri = raw.parse().map_err(|_| bad("not a URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(bad("must be an http:// or https:// URL")),
    }
    let authority = uri.authority().ok_or_else(|| bad("has no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("must not carry user information"));
    }
    Ok(raw.to_owned())
}

/// `PUT /api/notifications/preferences`: `{"inApp", "webhookUrl"
/// (null: none), "email" (null: none), "rotateSecret"?}`. A webhook's signing secret is made
/// when the first URL is set (or on `rotateSecret`) and answered once.
pub async fn set_preferences(req: Request, who: &Principal) -> Result<Reply, Problem> {
    let new: NewPreferences = read_json(req, MAX_BODY_BYTES).await?;
    let url = new.webhook_url.as_deref().map(webhook_url).transpose()?;
    let email = new.email.as_deref().map(email_address).transpose()?;
    if new.rotate_secret && url.is_none() {
        return Err(Problem::invalid_field(
            "rotateSecret",
            "there is no webhook to sign for",
        ));
    }
    let conn = store::open().await?;
    let before = store::preferences(&conn, who.subject.as_str()).await?;
    let new_secret = url.is_some() && (before.webhook_secret.is_none() || new.rotate_secret);
    let saved = rows(
        &conn,
        "INSERT INTO notifications.preferences (customer_id, in_app, webhook_url, webhook_secret, email) \
         VALUES ($1, $2, $3, CASE WHEN $4 THEN 'whsec_' || replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '') END, $5) \
         ON CONFLICT (customer_id) DO UPDATE SET in_app = EXCLUDED.in_app, webhook_url = EXCLUDED.webhook_url, \
         email = EXCLUDED.email, \
         webhook_secret = CASE WHEN $4 THEN EXCLUDED.webhook_secret \
                               WHEN EXCLUDED.webhook_url IS NULL THEN NULL \
                               ELSE notifications.preferences.webhook_secret END, \
         updated_at = now() \
         RETURNING in_app, webhook_url, webhook_secret, email",
        vec![
            text(who.subject.as_str()),
            spin_sdk::pg::ParameterValue::Boolean(new.in_app),
            url.map_or(spin_sdk::pg::ParameterValue::DbNull, text),
            spin_sdk::pg::ParameterValue::Boolean(new_secret),
            email.map_or(spin_sdk::pg::ParameterValue::DbNull, text),
        ],
    )
    .await?;
    let row = saved
        .first()
        .ok_or_else(|| Problem::internal("preferences vanished"))?;
    let prefs = store::Preferences {
        in_app: store::col(row, "in_app")?,
        webhook_url: row.get::<Option<String>>("webhook_url").flatten(),
        webhook_secret: row.get::<Option<String>>("webhook_secret").flatten(),
        email: row.get::<Option<String>>("email").flatten(),
    };
    Ok(json(200, &preferences_body(&prefs, new_secret)))
}

/// `GET /api/notifications/deliveries`: the webhook delivery log, newest
/// first.
pub async fn deliveries(who: &Principal, query: &str) -> Result<Reply, Problem> {
    let (limit, customer) = params(query, who)?;
    let conn = store::open().await?;
    let list = rows(
        &conn,
        &format!(
            "SELECT {} FROM notifications.deliveries WHERE customer_id = $1 \
             ORDER BY created_at DESC, id LIMIT $2",
            delivery_columns()
        ),
        vec![text(&customer), spin_sdk::pg::ParameterValue::Int64(limit)],
    )
    .await?
    .iter()
    .map(store::delivery)
    .collect::<Result<Vec<_>, _>>()?;
    Ok(json(200, &json!({ "deliveries": list })))
}

/// `POST /api/notifications/deliveries/{id}/replay`: sends it again now,
/// whatever its status (its owner or an administrator).
pub async fn replay(id: &str, who: &Principal) -> Result<Reply, Problem> {
    let not_found = || Problem::not_found(format!("no delivery {id}"));
    if !is_uuid(id) {
        return Err(not_found());
    }
    let conn = store::open().await?;
    let delivery = deliver::load(&conn, id).await?;
    if !who.may_access(&delivery.customer_id) {
        return Err(not_found());
    }
    let after = deliver::attempt(&conn, id, true).await?;
    Ok(json(200, &after))
}
