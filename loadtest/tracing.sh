#!/usr/bin/env bash
# What tracing costs — a benchmark, not a test.
#
#   bash loadtest/tracing.sh
#
# Runs loadtest/commerce.sh in PAIRS pairs on the same machine, each pair
# once with tracing off (no OTLP endpoint: bv installs no tracing layer at
# all) and once with TRACING=1 (every request, instantiation, outbound call,
# statement and event delivery is a span, exported with the batch exporter
# over OTLP http/protobuf to `commerce-bench otlp-sink`, plus metrics every
# 10 s). The order alternates (off-on, on-off, …) so that a machine getting
# slower or faster over the runs does not count as the cost.
#
# On a shared machine the speed drifts between two runs by as much as the
# cost measured, so every figure is a ratio of the two runs of one pair
# (tracing on / off), and the report gives each pair's ratio and their
# median. The bv GET rates are also taken relative to the native server's
# rate for the same endpoint in the same run, which tracing does not touch.
# Writes loadtest/results/tracing-<date>.md (each run also writes its own
# commerce-<date>.md).
#
# Environment: PAIRS=3, and what commerce.sh reads (DURATION, CONNECTIONS,
# CUSTOMERS, CLIENTS, …); the defaults here are shorter than commerce.sh's:
#   DURATION=10 CUSTOMERS=600 CHECKOUT_WARMUP=40
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export DURATION="${DURATION:-10}" CUSTOMERS="${CUSTOMERS:-600}" CHECKOUT_WARMUP="${CHECKOUT_WARMUP:-40}"
PAIRS="${PAIRS:-3}"
[[ "$PAIRS" =~ ^[1-9][0-9]*$ ]] || { echo "PAIRS must be a positive integer, not '$PAIRS'" >&2; exit 1; }
WORK="$(mktemp -d -t bv-tracing.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

for pair in $(seq 1 "$PAIRS"); do
    order="0 1"
    (( pair % 2 == 0 )) && order="1 0"
    for mode in $order; do
        printf '\n==== pair %s of %s, tracing %s\n' "$pair" "$PAIRS" "$([[ $mode == 1 ]] && echo on || echo off)" >&2
        TRACING="$mode" SUMMARY="$WORK/summary-$pair-$mode.txt" bash loadtest/commerce.sh >/dev/null
        sleep 5 # let the machine settle between the runs
    done
done

get() { awk -v k="$3" '$1 == k { $1 = ""; sub(/^ /, ""); print; exit }' "$WORK/summary-$1-$2.txt"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "—"; else printf "%.3f", a / b }'; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# The on/off ratio of a figure in pair $1; with $3, of the figure $2 over $3.
pair_ratio() {
    local on off
    if [[ -n "${3:-}" ]]; then
        on="$(ratio "$(get "$1" 1 "$2")" "$(get "$1" 1 "$3")")"; off="$(ratio "$(get "$1" 0 "$2")" "$(get "$1" 0 "$3")")"
    else
        on="$(get "$1" 1 "$2")"; off="$(get "$1" 0 "$2")"
    fi
    ratio "$on" "$off"
}
row() { # LABEL FIGURE [BASE]
    local ratios=() r
    for pair in $(seq 1 "$PAIRS"); do ratios+=("$(pair_ratio "$pair" "$2" "${3:-}")"); done
    r="$(echo "${ratios[*]}" | median)"
    printf '| %s | %s | **%s** |\n' "$1" "${ratios[*]}" "$r"
}

STAMP="$(date +%Y-%m-%d-%H%M)"
RESULTS="$ROOT/loadtest/results/tracing-$STAMP.md"
{
    echo "# Tracing on against off — $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "$PAIRS pairs of \`loadtest/commerce.sh\` runs (DURATION=$DURATION CUSTOMERS=$CUSTOMERS), tracing off and on in alternating order, on one machine ($(nproc) cores; wrk, the driver, bv, PostgreSQL and Redis on it). With tracing on, bv exported over OTLP http/protobuf to a sink that drops everything; in the first pair it received: $(get 1 1 sink)."
    echo
    echo "Each figure as tracing on ÷ tracing off within a pair (below 1: slower or fewer with tracing), then the median of the pairs:"
    echo
    echo "| figure | per pair | median |"
    echo "|---|---|---:|"
    row "hello component, req/s" hello_rps
    row "product GET, req/s" product_rps
    row "product list, req/s" list_rps
    row "product GET ÷ native server, same run" product_rps native_product_rps
    row "product list ÷ native server, same run" list_rps native_list_rps
    row "native product GET, req/s (untouched by tracing: the drift)" native_product_rps
    row "checkouts/s" checkout_rate
    row "checkout p50" checkout_p50_ms
    row "checkout p99" checkout_p99_ms
    row "bv CPU per checkout" cpu_bv_us
    echo
    echo "Runs (off, on) per pair:"
    for pair in $(seq 1 "$PAIRS"); do
        echo "- pair $pair: \`$(get "$pair" 0 results)\`, \`$(get "$pair" 1 results)\`; checkout errors $(get "$pair" 0 checkout_errors), $(get "$pair" 1 checkout_errors)"
    done
} >"$RESULTS"
cat "$RESULTS"
echo
echo "Written to ${RESULTS#"$ROOT"/}"
