#!/usr/bin/env bash
# Runs game days against the platform: steady state, faults, recovery, and
# the invariant checker (docs/runbooks/ for each failure):
#
#   bash loadtest/gameday.sh [name|all] [bv-load chaos run options]
#
# name: a file in loadtest/experiments/ without .toml (default: all of
# them, one after the other). Starts the platform (infra/scripts/up.sh,
# which switches bv's fault endpoints on with the development admin token
# in .spin/dev-admin-token) when nothing answers on BV_LOAD_URL. Reports go
# to loadtest/results/gameday-<name>-<time>.*; the exit code is 1 when an
# experiment failed.
#
# postgres-restart stops and starts the machine's PostgreSQL cluster
# (pg_ctlcluster), unless BV_CHAOS_PG_STOP / BV_CHAOS_PG_START say how
# to stop and start another. Options pass through, e.g. --time-scale 0.25.
source "$(dirname "$0")/platform.sh"
name="${1:-all}"
shift || true
if [ "$name" = all ]; then
  experiments=(loadtest/experiments/*.toml)
else
  experiments=("loadtest/experiments/$name.toml")
  if [ ! -f "${experiments[0]}" ]; then
    echo "error: no experiment ${experiments[0]}; there are: $(cd loadtest/experiments && ls *.toml | sed 's/\.toml$//' | tr '\n' ' ')" >&2
    exit 2
  fi
fi
ensure_platform
failed=()
for experiment in "${experiments[@]}"; do
  say "game day: $experiment"
  if ! "$BV_LOAD" chaos run "$experiment" --out loadtest/results "$@"; then
    failed+=("$(basename "$experiment" .toml)")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "game days that failed: ${failed[*]}" >&2
  exit 1
fi
say "every game day passed"
