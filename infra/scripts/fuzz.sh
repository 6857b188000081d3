#!/usr/bin/env bash
# Runs the fuzz targets of fuzz/ (cargo fuzz, libFuzzer) for a bounded time
# each: BV_FUZZ_SECONDS (default 60) per target. Arguments name the targets
# to run (default: all). New inputs go to fuzz/corpus/<target> (not checked
# in), starting from the checked-in seeds in fuzz/seeds/<target>; a crash
# leaves its input in fuzz/artifacts/<target> and fails the script.
set -euo pipefail
source "$(dirname "$0")/env.sh"

seconds="${BV_FUZZ_SECONDS:-60}"
if ! command -v cargo-fuzz >/dev/null; then
  say "installing cargo-fuzz (crates.io)"
  CARGO_TARGET_DIR="$HOME/.cache/bitvelocity/tools-target" cargo install --locked cargo-fuzz
fi
# cargo fuzz builds with unstable compiler flags (-Zsanitizer=address and
# friends); the stable toolchain accepts them with RUSTC_BOOTSTRAP=1, so no
# nightly toolchain is needed.
export RUSTC_BOOTSTRAP=1
# Sanitizer builds of their own: they must not touch the host's build cache.
export CARGO_TARGET_DIR="$HOME/.cache/bitvelocity/fuzz-target"

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi
for target in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$target"
  say "fuzzing $target for ${seconds} s"
  cargo fuzz run "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
done
say "fuzzing: no target crashed (${#targets[@]} targets, ${seconds} s each)"
