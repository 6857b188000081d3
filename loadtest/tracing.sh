#!/usr/bin/env bash
# What tracing costs — a benchmark, not a test.
#
#   bash loadtest/tracing.sh
#
# Runs loadtest/commerce.sh twice in a row on the same machine: first with
# tracing off (no OTLP endpoint: bv installs no tracing layer at all), then
# with TRACING=1 (every request, instantiation, outbound call, statement and
# event delivery is a span, exported with the batch exporter over OTLP
# http/protobuf to `commerce-bench otlp-sink`, plus metrics every 10 s).
# Compares the headline figures of the two runs and writes the comparison to
# loadtest/results/tracing-<date>.md (each run also writes its own
# commerce-<date>.md). The machine's speed drifts between two runs by as
# much as the cost measured, so each bv GET rate is also taken relative to
# the native server's rate for the same endpoint in the same run (which
# tracing does not touch): the cost as the change of that ratio.
#
# Environment: passed on to commerce.sh (DURATION, CONNECTIONS, CUSTOMERS,
# CLIENTS, …); defaults here are shorter than commerce.sh's own:
#   DURATION=15 CUSTOMERS=1000 CHECKOUT_WARMUP=40
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export DURATION="${DURATION:-15}" CUSTOMERS="${CUSTOMERS:-1000}" CHECKOUT_WARMUP="${CHECKOUT_WARMUP:-40}"
WORK="$(mktemp -d -t bv-tracing.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

for mode in 0 1; do
    printf '\n==== tracing %s\n' "$([[ $mode == 1 ]] && echo on || echo off)" >&2
    TRACING="$mode" SUMMARY="$WORK/summary-$mode.txt" bash loadtest/commerce.sh >/dev/null
    sleep 5 # let the machine settle between the runs
done

get() { awk -v k="$2" '$1 == k { $1 = ""; sub(/^ /, ""); print; exit }' "$WORK/summary-$1.txt"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "—"; else printf "%.3f", a / b }'; }
cost() { awk -v on="$1" -v off="$2" 'BEGIN { if (off + 0 == 0) print "—"; else printf "%+.1f %%", 100 * (off - on) / off }'; }

STAMP="$(date +%Y-%m-%d-%H%M)"
RESULTS="$ROOT/loadtest/results/tracing-$STAMP.md"
{
    echo "# Tracing on against off — $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "Two runs of \`loadtest/commerce.sh\` (DURATION=$DURATION CUSTOMERS=$CUSTOMERS), one after the other on the same machine ($(nproc) cores, wrk, the driver, bv, PostgreSQL and Redis on it): tracing off, then on (OTLP http/protobuf to a sink that drops everything; it received: $(get 1 sink)). Full reports: \`$(get 0 results)\` (off), \`$(get 1 results)\` (on)."
    echo
    echo "| figure | tracing off | tracing on | on / off | throughput lost to tracing |"
    echo "|---|---:|---:|---:|---:|"
    for key in hello_rps product_rps list_rps checkout_rate; do
        off="$(get 0 "$key")"; on="$(get 1 "$key")"
        printf '| %s | %.1f | %.1f | %s | %s |\n' "$key" "$off" "$on" "$(ratio "$on" "$off")" "$(cost "$on" "$off")"
    done
    for key in product_p99_us checkout_p50_ms checkout_p99_ms cpu_bv_us; do
        off="$(get 0 "$key")"; on="$(get 1 "$key")"
        printf '| %s | %s | %s | %s | |\n' "$key" "$off" "$on" "$(ratio "$on" "$off")"
    done
    echo
    echo "Against the native server in the same run (tracing does not touch it; its own rate moved by $(cost "$(get 1 native_product_rps)" "$(get 0 native_product_rps)") and $(cost "$(get 1 native_list_rps)" "$(get 0 native_list_rps)") between the runs):"
    echo
    echo "| endpoint | bv / native, tracing off | bv / native, tracing on | throughput lost to tracing |"
    echo "|---|---:|---:|---:|"
    for pair in "product_rps native_product_rps" "list_rps native_list_rps"; do
        set -- $pair
        off="$(ratio "$(get 0 "$1")" "$(get 0 "$2")")"; on="$(ratio "$(get 1 "$1")" "$(get 1 "$2")")"
        printf '| %s | %s | %s | %s |\n' "$1" "$off" "$on" "$(cost "$on" "$off")"
    done
    echo
    echo "Checkout errors: off $(get 0 checkout_errors), on $(get 1 checkout_errors)."
} >"$RESULTS"
cat "$RESULTS"
echo
echo "Written to ${RESULTS#"$ROOT"/}"
