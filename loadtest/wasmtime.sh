#!/usr/bin/env bash
# Prints the path of a wasmtime CLI 48 (the benchmarks' peer runtime),
# installing wasmtime-cli 48 from crates.io into a cache the first time:
#
#   WASMTIME="$(bash loadtest/wasmtime.sh)"
#
# A `wasmtime` 48.x on PATH is used as it is. Otherwise the cache is
# $HOME/.cache/bitvelocity/wasmtime-48 (WASMTIME_ROOT overrides it); the
# install compiles wasmtime (about ten minutes on 2 cores, once).
# Progress goes to stderr, the path alone to stdout.
set -euo pipefail
VERSION="${WASMTIME_VERSION:-48.0.8}"
ROOT_DIR="${WASMTIME_ROOT:-$HOME/.cache/bitvelocity/wasmtime-48}"

if command -v wasmtime >/dev/null && wasmtime --version 2>/dev/null | grep -q '^wasmtime 48\.'; then
    command -v wasmtime
    exit 0
fi
BIN="$ROOT_DIR/bin/wasmtime"
if [[ -x "$BIN" ]] && "$BIN" --version 2>/dev/null | grep -q "^wasmtime ${VERSION}"; then
    echo "$BIN"
    exit 0
fi
printf '==> installing wasmtime-cli %s into %s (once; about ten minutes)\n' "$VERSION" "$ROOT_DIR" >&2
# Its own target dir, so the install neither reuses nor disturbs bv's build.
CARGO_TARGET_DIR="$ROOT_DIR/build" cargo install --locked --quiet \
    --root "$ROOT_DIR" --version "=$VERSION" wasmtime-cli >&2
rm -rf "$ROOT_DIR/build"
"$BIN" --version >&2
echo "$BIN"
