//! The auth service's tables (schema `auth`), applied with
//! `bv_service::migrate` on first use.

use bv_service::Migration;

/// The component's name in `bv_migrations`.
pub const COMPONENT: &str = "auth";

/// Users and refresh tokens. Only hashes are stored: argon2id PHC strings
/// for passwords, SHA-256 for refresh tokens (they are random, so a fast
/// hash is enough and a lookup by hash stays an index scan).
pub const MIGRATIONS: &[Migration] = &[Migration {
    name: "0001_users_and_sessions",
    sql: "CREATE SCHEMA IF NOT EXISTS auth;
CREATE TABLE auth.users (
    user_id text PRIMARY KEY,
    email text NOT NULL UNIQUE CHECK (email = lower(email)),
    password_hash text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE auth.refresh_tokens (
    token_hash text PRIMARY KEY,
    family_id text NOT NULL,
    user_id text NOT NULL REFERENCES auth.users (user_id),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    rotated_at timestamptz,
    revoked_at timestamptz
);
CREATE INDEX refresh_tokens_family ON auth.refresh_tokens (family_id)",
}];
