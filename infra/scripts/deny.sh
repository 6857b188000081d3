#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (policy: deny.toml at the repository
# root): licenses, banned crates, and sources (crates.io only), for every
# cargo workspace of the repository. Offline: the advisories check needs the
# RustSec database, so CI runs it (`infra/scripts/deny.sh advisories`, or
# any list of checks as arguments).
set -euo pipefail
source "$(dirname "$0")/env.sh"

if ! command -v cargo-deny >/dev/null; then
  say "installing cargo-deny (crates.io)"
  # Its own target dir: the tool's build outputs do not belong in the
  # project's build cache.
  CARGO_TARGET_DIR="$HOME/.cache/bitvelocity/tools-target" cargo install --locked cargo-deny
fi

checks=("$@")
if [ ${#checks[@]} -eq 0 ]; then
  checks=(licenses bans sources)
fi

for workspace in . components fuzz; do
  [ -f "$workspace/Cargo.toml" ] || continue
  say "cargo deny check ${checks[*]} ($workspace)"
  cargo deny --manifest-path "$workspace/Cargo.toml" --config "$REPO_ROOT/deny.toml" \
    --locked check "${checks[@]}"
done
say "cargo-deny: all checks passed"
