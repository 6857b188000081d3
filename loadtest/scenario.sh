#!/usr/bin/env bash
# Runs a load scenario against the platform and judges it against the SLOs
# (infra/observability/sli-targets.yaml):
#
#   bash loadtest/scenario.sh [name] [bv-load run options]
#
# name: a file in loadtest/scenarios/ without .toml (default: shop). Starts
# the platform (infra/scripts/up.sh) when nothing answers on BV_LOAD_URL
# (default http://127.0.0.1:3000). The report (text, JSON, latency and
# throughput plots) goes to loadtest/results/<name>-<time>.*; the exit code
# is 1 when an objective failed.
#
# Options pass through to `bv-load run`, e.g. --time-scale 0.2 (a short
# form), --rate-scale 2, --metrics-url "" (skip the events objective).
source "$(dirname "$0")/platform.sh"
name="${1:-shop}"
shift || true
scenario="loadtest/scenarios/$name.toml"
if [ ! -f "$scenario" ]; then
  echo "error: no scenario $scenario; there are: $(cd loadtest/scenarios && ls *.toml | sed 's/\.toml$//' | tr '\n' ' ')" >&2
  exit 2
fi
ensure_platform
"$BV_LOAD" run "$scenario" --out loadtest/results "$@"
