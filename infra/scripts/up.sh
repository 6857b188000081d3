#!/usr/bin/env bash
# Brings the whole platform up on local defaults: starts the services, builds
# `bv` and every component, and runs `bv up` on spin.toml (Ctrl-C stops it).
# Extra arguments go to `bv up` (e.g. --listen 0.0.0.0:3000).
set -euo pipefail
source "$(dirname "$0")/env.sh"

bash infra/scripts/services.sh
say "building bv (release)"
cargo build --release -p bv
say "building components"
"$BV" build
exec "$BV" up "$@"
