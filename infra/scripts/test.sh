#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, and every unit and integration
# test against the real local services and real wasm components.
set -euo pipefail
source "$(dirname "$0")/env.sh"

bash infra/scripts/services.sh
say "checking formatting"
cargo fmt --all --check
(cd components && cargo fmt --all --check)
say "building bv and the components"
cargo build --release -p bv
"$BV" build
say "clippy"
cargo clippy --release --workspace --all-targets -- -D warnings
say "tests"
cargo test --release --workspace --no-fail-fast
say "guest library tests (on the host)"
(cd components && cargo test -p bv-events-guest -p bv-service)
say "all tests passed"
