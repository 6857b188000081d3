# Shared by loadtest/scenario.sh and loadtest/gameday.sh; sourced, not run.
# Builds bv and bv-load, and makes sure the platform answers on
# $BV_LOAD_URL: when nothing does, it starts `bash infra/scripts/up.sh` in
# the background (log in .spin/up.log) and stops it when the script ends.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bitvelocity/target}"
export BV_LOAD_URL="${BV_LOAD_URL:-http://127.0.0.1:3000}"
BV_LOAD="$CARGO_TARGET_DIR/release/bv-load"
UP_PID=""
say() { printf '==> %s\n' "$*" >&2; }

answers() { curl -fsS -o /dev/null --max-time 2 "$BV_LOAD_URL/hello/" 2>/dev/null; }

stop_platform() {
  if [ -n "$UP_PID" ]; then
    say "stopping the platform this script started"
    kill -TERM -- "-$UP_PID" 2>/dev/null || kill -TERM "$UP_PID" 2>/dev/null || true
    wait "$UP_PID" 2>/dev/null || true
  fi
}

ensure_platform() {
  say "building bv-load (release)"
  cargo build --release -q -p bv-load
  if answers; then
    say "the platform answers on $BV_LOAD_URL"
    return
  fi
  if [ "$BV_LOAD_URL" != "http://127.0.0.1:3000" ]; then
    echo "error: nothing answers on $BV_LOAD_URL" >&2
    exit 1
  fi
  mkdir -p .spin
  # Load clients claim an address of their own each (x-forwarded-for), so
  # the per-client rate limits apply per virtual user, as they do per
  # person behind an ingress; that needs the platform to trust the local
  # proxy hop.
  export SPIN_VARIABLE_TRUSTED_PROXIES="${SPIN_VARIABLE_TRUSTED_PROXIES:-127.0.0.1}"
  say "starting the platform (bash infra/scripts/up.sh; log in .spin/up.log; the first build takes a while)"
  set -m
  bash infra/scripts/up.sh >.spin/up.log 2>&1 &
  UP_PID=$!
  set +m
  trap stop_platform EXIT
  local waited=0
  until answers; do
    if ! kill -0 "$UP_PID" 2>/dev/null; then
      echo "error: the platform did not start; the end of .spin/up.log:" >&2
      tail -n 30 .spin/up.log >&2
      exit 1
    fi
    sleep 5
    waited=$((waited + 5))
    if [ $((waited % 60)) -eq 0 ]; then
      say "still starting after ${waited}s: $(grep '^==>' .spin/up.log | tail -n 1)"
    fi
  done
  say "the platform answers on $BV_LOAD_URL"
}
