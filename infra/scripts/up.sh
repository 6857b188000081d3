#!/usr/bin/env bash
# Brings the whole platform up on local defaults: starts the services, builds
# `bv` and every component, and runs `bv up` on spin.toml (Ctrl-C stops it).
# Extra arguments go to `bv up` (e.g. --listen 0.0.0.0:3000).
set -euo pipefail
source "$(dirname "$0")/env.sh"

bash infra/scripts/services.sh
# The platform database (spin.toml's `db_url` default); migrations run in the
# components on first use, the event log is created by `bv`.
if ! psql -h 127.0.0.1 -U postgres -d postgres -Atc "SELECT 1 FROM pg_database WHERE datname = 'bitvelocity'" | grep -q 1; then
  say "creating database bitvelocity"
  psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE bitvelocity"
fi
say "building bv (release)"
cargo build --release -p bv
say "building components"
"$BV" build
exec "$BV" up "$@"
