# Shared settings of the scripts in this folder; sourced, not run.
# Build outputs of the native host go to a cache directory outside the
# checkout, so a fresh clone on a machine that has built BitVelocity before
# reuses the compiled wasmtime instead of spending ten minutes on it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bitvelocity/target}"
BV="$CARGO_TARGET_DIR/release/bv"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO_ROOT"
say() { printf '==> %s\n' "$*" >&2; }
