//! `auth`: accounts and sessions, under `/api/auth`.
//!
//! | method and path | answer |
//! |---|---|
//! | `POST /register` `{email, password}` | 201 `{userId, email, role}`; 409 `email-taken`; 422 `invalid-field` (a malformed email, a weak password) |
//! | `POST /login` `{email, password}` | 200 tokens (below); 401 `invalid-credentials`; 429 `login-throttled` after repeated failures ([`guard`]) |
//! | `POST /refresh` `{refreshToken}` | 200 new tokens; 401 `invalid-refresh-token` |
//! | `POST /logout` `{refreshToken}` | 204, the session's refresh tokens revoked |
//! | `GET /jwks` | 200 the public keys (JWKS) |
//!
//! Tokens: `{accessToken, tokenType: "Bearer", expiresIn, refreshToken,
//! refreshExpiresIn, userId, role}`. The access token is a JWT signed with
//! EdDSA (`kid` in its header) by the first key of the secret variable
//! `auth_signing_keys`, valid 15 minutes, with claims `sub` (the user id),
//! `role`, `iss`, `aud`, `iat`, `nbf`, `exp`, `jti`; every service checks
//! it locally with `bv-auth` and the public keys. The refresh token is
//! opaque (32 random bytes), valid 30 days, and single use: a refresh
//! answers a new pair and retires the token it used; presenting a retired
//! token again revokes the whole session (see [`store`]). Logout revokes
//! it too. An access token already issued stays valid until it expires.
//!
//! Passwords must pass [`password::weakness`] and are stored as argon2id
//! hashes; hashing has a bulkhead of its own ([`hashing`]: at most
//! `auth_hash_concurrency` hashes at once, 503 `concurrency-limit` with
//! `Retry-After` past it). A login for an unknown email costs one argon2id verification,
//! as a wrong password does. Roles: `admin` for the emails listed in
//! `auth_admin_emails` (checked at every login and refresh), `customer`
//! otherwise. Failed logins are counted per account and address, per
//! address and per account; repeated failures slow the attempts down and
//! then lock them out for a while (see [`guard`]).
//!
//! Neither passwords nor keys nor tokens are ever logged or echoed.
#![deny(missing_docs)]

mod config;
mod email;
mod guard;
mod hashing;
mod password;
mod schema;
mod store;

use bv_auth::{NewToken, Principal, Role, Subject, AUDIENCE, ISSUER};
use bv_service::{json, path_info, read_json, Problem, ProblemKind, Reply};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use spin_sdk::http::{FullBody, HeaderValue, Method, Request, Response};
use spin_sdk::http_service;

use store::Rotation;

/// Where `spin.toml` mounts this component (`route = "/api/auth/..."`); callers
/// use the same path over service chaining.
const MOUNT: &str = "/api/auth";

/// Bodies are an email and a password, or a token: small.
const MAX_BODY: usize = 4 * 1024;

#[http_service]
async fn handle(req: Request) -> Reply {
    route(req).await.unwrap_or_else(Problem::into_response)
}

/// 405 with `Allow` ([`Problem::method_not_allowed`] sets it).
fn method_not_allowed(allowed: &'static str) -> Result<Reply, Problem> {
    Ok(Problem::method_not_allowed(allowed).into_response())
}

async fn route(req: Request) -> Result<Reply, Problem> {
    let path = path_info(&req, MOUNT)?;
    let post = req.method() == Method::POST;
    match path.as_str() {
        "/register" if post => register(req).await,
        "/login" if post => login(req).await,
        "/refresh" if post => refresh(req).await,
        "/logout" if post => logout(req).await,
        "/register" | "/login" | "/refresh" | "/logout" => method_not_allowed("POST"),
        "/jwks" if matches!(req.method(), &Method::GET | &Method::HEAD) => jwks().await,
        "/jwks" => method_not_allowed("GET, HEAD"),
        _ => Err(Problem::not_found(format!("no route /api/auth{path}"))),
    }
}

/// `{email, password}`. No `Debug`: it holds a password.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    email: String,
    password: String,
}

/// `{refreshToken}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RefreshBody {
    refresh_token: String,
}

async fn register(req: Request) -> Result<Reply, Problem> {
    let body: Credentials = read_json(req, MAX_BODY).await?;
    let email = email::normalize(&body.email);
    email::check(&email).map_err(|why| Problem::invalid_field("email", why))?;
    if let Some(why) = password::weakness(&body.password, &email) {
        return Err(Problem::invalid_field("password", why));
    }
    let slot = hashing::slot().await?;
    let hash = password::hash(&body.password).map_err(Problem::internal);
    slot.release().await;
    let hash = hash?;
    let conn = store::open().await?;
    let Some(user) = store::create_user(&conn, &email, &hash).await? else {
        return Err(Problem::new(
            409,
            ProblemKind::EmailTaken,
            "The email has an account",
            "an account with this email exists: log in, or register another email",
        ));
    };
    let role = role_of(&email).await?;
    Ok(json(
        201,
        &json!({ "userId": user, "email": email, "role": role.as_str() }),
    ))
}

fn invalid_credentials() -> Problem {
    Problem::new(
        401,
        ProblemKind::InvalidCredentials,
        "The email or password is wrong",
        "no account matches this email and password",
    )
}

/// 429 with `Retry-After`: the account from this address, or this
/// address, is locked after repeated failures. The same for every email,
/// with or without an account.
fn login_throttled(seconds: u64) -> Reply {
    let mut reply = Problem::new(
        429,
        ProblemKind::LoginThrottled,
        "Too many failed logins",
        format!("too many failed logins: try again in {seconds} s"),
    )
    .into_response();
    reply
        .headers_mut()
        .insert("retry-after", HeaderValue::from(seconds));
    reply
}

fn failed_login(outcome: &str) -> Problem {
    bv_service::telemetry::counter("login_attempts", &[("outcome", outcome)], 1);
    invalid_credentials()
}

async fn login(req: Request) -> Result<Reply, Problem> {
    let client = guard::client_ip(
        req.headers()
            .get("spin-client-addr")
            .and_then(|v| v.to_str().ok()),
    );
    let body: Credentials = read_json(req, MAX_BODY).await?;
    let email = email::normalize(&body.email);
    let guard = guard::Guard::new(&email, client).await;
    let checked = guard.check().await;
    if let Some(seconds) = checked.locked_for {
        bv_service::telemetry::counter("login_attempts", &[("outcome", "refused")], 1);
        return Ok(login_throttled(seconds));
    }
    let delay = guard.delay(&checked);
    if !delay.is_zero() {
        spin_sdk::time::sleep(delay).await;
    }
    // No connection is held while waiting for a hashing slot or hashing.
    let found = store::find_user(&store::open().await?, &email).await?;
    let slot = hashing::slot().await?;
    let verified = match &found {
        Some((_, hash)) => password::verify(&body.password, hash),
        None => {
            password::verify_dummy(&body.password);
            false
        }
    };
    slot.release().await;
    let Some((user, _)) = found.filter(|_| verified) else {
        guard.failed().await;
        return Err(failed_login("failure"));
    };
    guard.succeeded().await;
    bv_service::telemetry::counter("login_attempts", &[("outcome", "success")], 1);
    let (refresh, refresh_hash) = store::new_refresh_token()?;
    // Sign first: with broken keys, no session is left behind.
    let answer = tokens(&user, &email, refresh).await?;
    store::start_session(&store::open().await?, &user, &refresh_hash).await?;
    Ok(answer)
}

fn invalid_refresh_token(detail: &str) -> Problem {
    Problem::new(
        401,
        ProblemKind::InvalidRefreshToken,
        "The refresh token is not valid",
        detail,
    )
}

async fn refresh(req: Request) -> Result<Reply, Problem> {
    let body: RefreshBody = read_json(req, MAX_BODY).await?;
    let (next, next_hash) = store::new_refresh_token()?;
    let conn = store::open().await?;
    match store::rotate(&conn, &store::token_hash(&body.refresh_token), &next_hash).await? {
        Rotation::Rotated { user, email } => tokens(&user, &email, next).await,
        Rotation::Invalid => Err(invalid_refresh_token(
            "the refresh token is unknown, expired or revoked: log in again",
        )),
        Rotation::Reused => {
            eprintln!("auth: a rotated refresh token was used again; its session is revoked");
            Err(invalid_refresh_token(
                "the refresh token was already used: the session is revoked, log in again",
            ))
        }
    }
}

async fn logout(req: Request) -> Result<Reply, Problem> {
    let body: RefreshBody = read_json(req, MAX_BODY).await?;
    let conn = store::open().await?;
    store::logout(&conn, &store::token_hash(&body.refresh_token)).await?;
    Ok(Response::builder()
        .status(204)
        .body(FullBody::new(Bytes::new()))
        .expect("a valid response"))
}

async fn jwks() -> Result<Reply, Problem> {
    let keys = config::signing_keys().await?;
    let mut reply = json(200, &keys.jwks());
    reply.headers_mut().insert(
        "cache-control",
        HeaderValue::from_static("public, max-age=300"),
    );
    Ok(reply)
}

async fn role_of(email: &str) -> Result<Role, Problem> {
    Ok(if config::is_admin_email(email).await? {
        Role::Admin
    } else {
        Role::Customer
    })
}

/// The token answer for `user`: a new access token and `refresh`.
async fn tokens(user: &str, email: &str, refresh: String) -> Result<Reply, Problem> {
    let keys = config::signing_keys().await?;
    let principal = Principal {
        subject: Subject::parse(user).ok_or_else(|| Problem::internal("a user id is malformed"))?,
        role: role_of(email).await?,
    };
    let token_id = uuid::Uuid::new_v4().to_string();
    let access = bv_auth::sign(
        &keys,
        &NewToken {
            principal: &principal,
            issuer: ISSUER,
            audience: AUDIENCE,
            issued_at: bv_auth::guest::now(),
            lifetime: config::ACCESS_TOKEN_SECONDS,
            token_id: &token_id,
        },
    );
    let mut reply = json(
        200,
        &json!({
            "accessToken": access,
            "tokenType": "Bearer",
            "expiresIn": config::ACCESS_TOKEN_SECONDS,
            "refreshToken": refresh,
            "refreshExpiresIn": config::REFRESH_TOKEN_SECONDS,
            "userId": user,
            "role": principal.role.as_str(),
        }),
    );
    // RFC 6749 §5.1: token answers are never cached.
    reply
        .headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    Ok(reply)
}
