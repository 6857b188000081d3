#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, and every unit and integration
# test against the real local services and real wasm components.
set -euo pipefail
source "$(dirname "$0")/env.sh"

bash infra/scripts/services.sh
if ! command -v promtool >/dev/null; then
  # The monitoring config test (tests/it/observability.rs) runs promtool,
  # which comes with Debian's prometheus package. Only the binary is needed:
  # keep apt from starting the Prometheus service while installing.
  say "installing promtool (Debian package prometheus)"
  made_policy=false
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    made_policy=true
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  if $made_policy; then rm -f /usr/sbin/policy-rc.d; fi
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi
say "checking formatting"
cargo fmt --all --check
(cd components && cargo fmt --all --check)
say "linting the GitHub workflows"
bash infra/scripts/actionlint.sh
say "building bv and the components"
cargo build --release -p bv
"$BV" build
say "clippy"
cargo clippy --release --workspace --all-targets -- -D warnings
(cd components && cargo clippy --workspace --all-targets -- -D warnings)
say "tests"
# Every app the integration tests start logs into this directory, beside
# the secrets the tests use; the scan after the suite reads them all.
BV_SUITE_LOG_DIR="$(mktemp -d -t bv-suite-logs.XXXXXX)"
export BV_SUITE_LOG_DIR
cargo test --release --workspace --no-fail-fast
say "scanning the suite's logs for the secrets it used"
cargo test --release -p bv --test it -- --ignored --exact \
  suite_secrets::the_suite_logs_hold_none_of_the_secrets_it_used
rm -rf "$BV_SUITE_LOG_DIR"
say "guest library tests (on the host)"
(cd components && cargo test -p bv-events-guest -p bv-service -p bv-auth -p bv-resilience -p bv-orders)
# Apart: cargo stops matching the other -p specs when `auth` is among them.
(cd components && cargo test -p auth)
if [ "${BV_LONG:-}" = 1 ]; then
  # The long mode: every fuzz target for a bounded time (BV_FUZZ_SECONDS,
  # 60 s by default).
  say "fuzz targets (BV_LONG=1)"
  bash infra/scripts/fuzz.sh
fi
say "all tests passed"
