#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, and every unit and integration
# test against the real local services and real wasm components.
set -euo pipefail
source "$(dirname "$0")/env.sh"

bash infra/scripts/services.sh
# Installs Debian packages for the suite's tools without letting apt start
# the services some of them ship (Prometheus, a registry on :5000): only
# their binaries are used.
install_debian_packages() {
  say "installing $* (Debian packages)"
  local made_policy=false
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    made_policy=true
  fi
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "$@" >/dev/null
  if $made_policy; then rm -f /usr/sbin/policy-rc.d; fi
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus docker-registry >/dev/null 2>&1 || true
  fi
}
# promtool (the monitoring config test, tests/it/observability.rs) comes with
# Prometheus; the registry, image and deployment tests use a local OCI
# registry (docker-registry), umoci and skopeo.
missing=()
command -v promtool >/dev/null || missing+=(prometheus)
# The IoT tests run a Mosquitto of their own; the walkthrough publishes with
# mosquitto_pub.
command -v mosquitto >/dev/null || missing+=(mosquitto)
command -v mosquitto_pub >/dev/null || missing+=(mosquitto-clients)
for tool in docker-registry umoci skopeo; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
# The load reports' plots draw their text with DejaVu Sans.
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
if [ ${#missing[@]} -gt 0 ]; then
  install_debian_packages "${missing[@]}"
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
say "line coverage of the host library crates (floor in infra/scripts/coverage.sh)"
bash infra/scripts/coverage.sh
say "Kubernetes manifests and Helm chart (offline validation)"
bash infra/scripts/k8s-validate.sh
say "publishing the WIT package to a local registry (wkg)"
bash infra/scripts/wit-publish-check.sh
say "guest library tests (on the host)"
(cd components && cargo test -p bv-events-guest -p bv-service -p bv-auth -p bv-resilience -p bv-orders -p bv-grpc)
# Apart: cargo stops matching the other -p specs when `auth` is among them.
(cd components && cargo test -p auth)
(cd components && cargo test -p chat -p notifications -p order -p iot -p product -p cart)
if [ "${BV_LONG:-}" = 1 ]; then
  # The long mode: every fuzz target for a bounded time (BV_FUZZ_SECONDS,
  # 60 s by default).
  say "fuzz targets (BV_LONG=1)"
  bash infra/scripts/fuzz.sh
fi
say "all tests passed"
