#!/usr/bin/env bash
# Runs the walkthrough (docs/WALKTHROUGH.md) against `bv up` and against real
# Spin on the same components, each on a fresh database, and compares what
# every step answered:
#
#   bash infra/scripts/spin-side-by-side.sh /path/to/spin                  # report on stdout
#   bash infra/scripts/spin-side-by-side.sh /path/to/spin --record docs/SPIN-SIDE-BY-SIDE.md [--spin-note "built from <commit>"]
#
# Spin runs the manifest's HTTP triggers (the Postgres and cron triggers are
# `bv`'s and Spin plugins'; see docs/SPIN.md). Needs curl, jq, psql, openssl
# and python3; builds bv and the components first.
set -euo pipefail
source "$(dirname "$0")/env.sh"
if [ $# -lt 1 ]; then
  echo "usage: $0 <path of the spin binary> [--record FILE]" >&2
  exit 2
fi
for tool in curl jq psql openssl python3; do
  command -v "$tool" >/dev/null || { echo "side-by-side: $tool is missing" >&2; exit 1; }
done
bash infra/scripts/services.sh
say "building bv (release)"
cargo build --release -p bv
say "building components"
"$BV" build
exec python3 infra/scripts/spin_side_by_side.py --bv "$BV" "$@"
