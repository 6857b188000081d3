#!/usr/bin/env bash
# Commerce services benchmark — a benchmark, not a test.
#
#   bash loadtest/commerce.sh
#
# Runs the whole app (the root spin.toml) under `bv up` on a scratch
# database (bv_bench_commerce, recreated, dropped at the end) and a Redis
# key prefix of its own (its keys deleted at the end). The manifest is a
# temporary copy of spin.toml: component sources made absolute, `db_url`'s
# default pointed at the scratch database (every component, the
# order-sweeper's cron half included, reads it), and the cart's
# `cart_key_prefix` set.
#
# 1. Product GETs: wrk -t1 -c$CONNECTIONS -d${DURATION}s --latency (after a
#    ${WARMUP}s warm-up), one endpoint at a time, on
#      GET /hello/                 the hello component, same bv: bv's floor
#      GET /api/products/{id}      a demo product, natively then under bv
#      GET /api/products           the first page, natively then under bv
#    "natively" is `commerce-bench native-product`: the product component's
#    SQL and answer (checked byte for byte) from hyper + deadpool-postgres.
# 2. Checkout: `commerce-bench checkout`: restocked demo products,
#    $CHECKOUT_WARMUP warm-up then $CUSTOMERS measured customers with a 1–2
#    line cart each (each with an access token the driver mints with the
#    run's own signing key, handed to bv as the auth variables), checked out from $CLIENTS connections (POST
#    /api/orders, own Idempotency-Key, tok_visa); every order verified PAID
#    in the database; CPU, bv's per-component request times and the
#    database's transaction counters around the measured checkouts.
# Prints the tables and writes them to loadtest/results/commerce-<date>.md.
#
# Environment:
#   DURATION=20  seconds per wrk run     WARMUP=2      warm-up seconds
#   CONNECTIONS=8  wrk connections       CUSTOMERS=2000  measured checkouts
#   CLIENTS=8    checkout connections    CHECKOUT_WARMUP=40
#   RATE=r       offer the measured checkouts at r per second, an open model
#                (latency from each checkout's scheduled start), instead of
#                from $CLIENTS closed-loop connections
#   PORT=3400 ADMIN_PORT=9800 NATIVE_PORT=3401   where the servers listen
#   GETS=0       skip the product GETs (checkout only)
#   SUBSCRIPTIONS=0  drop the manifest's [[trigger.postgres]] tables from the
#                copy (every event subscription: the consumers of the
#                checkout's events and the idle ones): how
#                much the subscriptions cost a checkout
#   TRACING=1    bv exports traces and metrics over OTLP (http/protobuf) to
#                `commerce-bench otlp-sink` on SINK_PORT=4399, which drops them
#   SUMMARY=path also write the headline figures as `key value` lines there
#                (loadtest/tracing.sh compares two runs with it)
#   KEEP_DB=1    keep the database       PGHOST/PGPORT/PGUSER  the server
#   REDIS_URL=redis://127.0.0.1:6379     CARGO_TARGET_DIR  default $HOME/.cache/bitvelocity/target
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DURATION="${DURATION:-20}"
WARMUP="${WARMUP:-2}"
CONNECTIONS="${CONNECTIONS:-8}"
CUSTOMERS="${CUSTOMERS:-2000}"
CLIENTS="${CLIENTS:-8}"
RATE="${RATE:-}"
CHECKOUT_WARMUP="${CHECKOUT_WARMUP:-40}"
PORT="${PORT:-3400}"
ADMIN_PORT="${ADMIN_PORT:-9800}"
NATIVE_PORT="${NATIVE_PORT:-3401}"
GETS="${GETS:-1}"
TRACING="${TRACING:-0}"
SINK_PORT="${SINK_PORT:-4399}"
SUBSCRIPTIONS="${SUBSCRIPTIONS:-1}"
PGHOST="${PGHOST:-127.0.0.1}"
PGPORT="${PGPORT:-5432}"
PGUSER="${PGUSER:-postgres}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
DB=bv_bench_commerce
DB_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$DB?sslmode=disable"
TAG="$(date +%s)-$$"
PREFIX="bv-bench-commerce-$TAG:"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bitvelocity/target}"
BV="$CARGO_TARGET_DIR/release/bv"
BENCH="$CARGO_TARGET_DIR/release/commerce-bench"
WORK="$(mktemp -d -t bv-commerce.XXXXXX)"
BASE="http://127.0.0.1:$PORT"
NATIVE_BASE="http://127.0.0.1:$NATIVE_PORT"
BV_PID=""
NATIVE_PID=""
SINK_PID=""

log() { printf '%s\n' "$*" >&2; }
psql_() { psql -v ON_ERROR_STOP=1 -q -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" "$@"; }

stop() { # PID
    local pid="$1"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    stop "$NATIVE_PID"
    stop "$BV_PID"
    stop "$SINK_PID"
    if [[ -z "${KEEP_DB:-}" ]]; then
        psql_ -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    fi
    redis-cli -u "$REDIS_URL" --scan --pattern "$PREFIX*" 2>/dev/null |
        xargs -r -n 500 redis-cli -u "$REDIS_URL" del >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

if ! command -v wrk >/dev/null; then
    log "wrk is missing: installing it with apt-get"
    SUDO=""; [[ "$(id -u)" != 0 ]] && SUDO="sudo"
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq && $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq wrk
fi
for tool in curl psql wrk redis-cli openssl; do
    command -v "$tool" >/dev/null || { log "$tool is required"; exit 1; }
done
for port in "$PORT" "$ADMIN_PORT" "$NATIVE_PORT" "$SINK_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        log "port $port is taken: choose others with PORT, ADMIN_PORT, NATIVE_PORT"
        exit 1
    fi
done

log "== building (release, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
cargo build --release -p bv -p commerce-bench
# The components land in components/target (the manifest's sources), so the
# component build runs without the host's CARGO_TARGET_DIR.
env -u CARGO_TARGET_DIR "$BV" build --from "$ROOT/spin.toml"

# ---------------------------------------------------------------- manifest
MANIFEST="$WORK/spin.toml"
awk -v root="$ROOT" -v db="$DB_URL" -v prefix="$PREFIX" -v subscriptions="$SUBSCRIPTIONS" '
    # SUBSCRIPTIONS=0: leave out every [[trigger.postgres]] table.
    /^\[/ { skipping = (subscriptions == "0" && $0 == "[[trigger.postgres]]") }
    skipping { next }
    # Sources relative to the repository, wherever the copy lives.
    /^source = "/ && !/^source = "\// { sub(/^source = "/, "source = \"" root "/") }
    # The platform database variable (also set in the environment below).
    /^db_url = / { sub(/default = "[^"]*"/, "default = \"" db "\"") }
    # The cart: a key prefix of our own (replacing one the manifest sets).
    /^\[/ { in_cart = ($0 == "[component.cart.variables]") }
    in_cart && /^cart_key_prefix *=/ { next }
    { print }
    $0 == "[component.cart.variables]" { print "cart_key_prefix = \"" prefix "\"" }
' "$ROOT/spin.toml" >"$MANIFEST"
grep -q "^cart_key_prefix = \"$PREFIX\"" "$MANIFEST" ||
    { log "spin.toml: [component.cart.variables] was not found"; exit 1; }
if grep -q 'bitvelocity?sslmode' "$MANIFEST"; then
    log "spin.toml still names the platform database after the rewrite:"
    grep -n 'bitvelocity?sslmode' "$MANIFEST" >&2
    exit 1
fi

# ---------------------------------------------------------------- helpers
to_us() {
    awk -v v="$1" 'BEGIN { n = v + 0
        if (v ~ /us$/) m = 1; else if (v ~ /ms$/) m = 1000; else if (v ~ /s$/) m = 1000000; else m = 1
        printf "%.1f", n * m }'
}
ms() { awk -v u="$1" 'BEGIN { printf "%.2f ms", u / 1000 }'; }

wait_http() { # NAME PID URL LOG
    for _ in $(seq 1 600); do
        if ! kill -0 "$2" 2>/dev/null; then log "$1 exited:"; cat "$4" >&2; exit 1; fi
        if curl -sf --max-time 2 -o /dev/null "$3"; then return 0; fi
        sleep 0.1
    done
    log "$1 did not answer $3 within 60 s:"; cat "$4" >&2; exit 1
}

# cpu_idle: percentage of CPU time idle over the next second (other work on
# the machine skews every figure: check this before trusting a run).
cpu_idle() {
    local a b
    a="$(awk '/^cpu / { print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat)"
    sleep 1
    b="$(awk '/^cpu / { print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat)"
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ");
        t = y[2] - x[2]; printf "%.0f", (t > 0 ? 100 * (y[1] - x[1]) / t : 0) }'
}

NAMES=(); ENDPOINTS=(); RPS=(); P50=(); P99=(); ERRS=(); IDLE=()
run_wrk() { # ENDPOINT NAME URL
    local i="${#NAMES[@]}" out="$WORK/wrk-${#NAMES[@]}.txt" idle
    idle="$(cpu_idle)"
    log "== $1, $2: wrk -t1 -c$CONNECTIONS -d${DURATION}s --latency $3 (CPU idle before: $idle%)"
    wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" "$3" >/dev/null
    wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$3" >"$out"
    local rps p50 p99 non2xx sock
    rps="$(awk '/^Requests\/sec:/ { print $2 }' "$out")"
    p50="$(awk '$1 == "50%" { print $2 }' "$out")"
    p99="$(awk '$1 == "99%" { print $2 }' "$out")"
    non2xx="$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")"
    sock="$(awk '/Socket errors:/ { sub(/.*Socket errors: */, ""); print }' "$out")"
    [[ -n "$rps" && -n "$p50" && -n "$p99" ]] || { log "cannot parse wrk's output:"; cat "$out" >&2; exit 1; }
    local errs="${non2xx:-0}"
    [[ -n "$sock" ]] && errs="$errs; socket: $sock"
    ENDPOINTS+=("$1"); NAMES+=("$2"); RPS+=("$rps"); P50+=("$(to_us "$p50")"); P99+=("$(to_us "$p99")")
    ERRS+=("$errs"); IDLE+=("$idle")
    log "   $rps req/s, p50 $p50, p99 $p99, non-2xx: $errs"
}

# ---------------------------------------------------------------- the app
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
log "== load average: $LOAD_BEFORE"
log "== database $DB, Redis prefix $PREFIX"
psql_ -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"

# A signing key of the run's own: bv's auth variables carry it, and the
# driver mints every customer's (and the restocking admin's) token with it.
COMMERCE_BENCH_AUTH_SEED="$(openssl rand 32 | base64 | tr '+/' '-_' | tr -d '=\n')"
export COMMERCE_BENCH_AUTH_SEED
{ read -r AUTH_SIGNING_KEYS; read -r AUTH_PUBLIC_KEYS; } < <("$BENCH" auth-keys)
[[ -n "$AUTH_SIGNING_KEYS" && -n "$AUTH_PUBLIC_KEYS" ]] || { log "commerce-bench auth-keys printed nothing"; exit 1; }

OTEL_ENV=(-u OTEL_EXPORTER_OTLP_ENDPOINT)
if [[ "$TRACING" == 1 ]]; then
    log "== OTLP sink on 127.0.0.1:$SINK_PORT (bv exports traces and metrics to it)"
    env -u RUST_BACKTRACE "$BENCH" otlp-sink --listen "127.0.0.1:$SINK_PORT" >"$WORK/sink.log" 2>&1 &
    SINK_PID=$!
    wait_http "OTLP sink" "$SINK_PID" "http://127.0.0.1:$SINK_PORT/stats" "$WORK/sink.log"
    OTEL_ENV=(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$SINK_PORT" OTEL_SERVICE_NAME=bv-bench
        OTEL_METRIC_EXPORT_INTERVAL=10000)
fi

log "== bv up (root spin.toml, scratch database, tracing: $TRACING) on $BASE"
env -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE "${OTEL_ENV[@]}" SPIN_VARIABLE_DB_URL="$DB_URL" \
    SPIN_VARIABLE_REDIS_URL="$REDIS_URL" RUST_LOG="${RUST_LOG:-warn}" \
    SPIN_VARIABLE_AUTH_SIGNING_KEYS="$AUTH_SIGNING_KEYS" SPIN_VARIABLE_AUTH_PUBLIC_KEYS="$AUTH_PUBLIC_KEYS" \
    SPIN_VARIABLE_RATE_LIMIT_READ_PER_MINUTE=100000000 SPIN_VARIABLE_RATE_LIMIT_READ_BURST=100000000 \
    SPIN_VARIABLE_RATE_LIMIT_WRITE_PER_MINUTE=100000000 SPIN_VARIABLE_RATE_LIMIT_WRITE_BURST=100000000 \
    SPIN_VARIABLE_RATE_LIMIT_AUTH_PER_MINUTE=100000000 SPIN_VARIABLE_RATE_LIMIT_AUTH_BURST=100000000 \
    "$BV" up --from "$MANIFEST" --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
    --state-dir "$WORK/state" --cache-dir "$HOME/.cache/bitvelocity/loadtest-bv-cache" \
    >"$WORK/bv.log" 2>&1 &
BV_PID=$!
wait_http bv "$BV_PID" "$BASE/hello/" "$WORK/bv.log"

log "== catalogue and stock"
PRODUCT="$("$BENCH" setup --url "$BASE" --restock 100000)"
log "   product GET on $PRODUCT"

log "== native product server on $NATIVE_BASE"
env -u RUST_BACKTRACE "$BENCH" native-product --db "$DB_URL" --listen "127.0.0.1:$NATIVE_PORT" \
    >"$WORK/native.log" 2>&1 &
NATIVE_PID=$!
wait_http "native product server" "$NATIVE_PID" "$NATIVE_BASE/api/products" "$WORK/native.log"
for path in "/api/products/$PRODUCT" "/api/products"; do
    a="$(curl -sf "$BASE$path")"; b="$(curl -sf "$NATIVE_BASE$path")"
    if [[ "$a" != "$b" ]]; then
        log "bv and the native server answer $path differently:"; log "bv:     $a"; log "native: $b"
        exit 1
    fi
done
log "   same bodies from both (product and list)"

if [[ "$GETS" != 0 ]]; then
    run_wrk "GET /hello/" "bv (hello component)" "$BASE/hello/"
    run_wrk "GET /api/products/{id}" "native" "$NATIVE_BASE/api/products/$PRODUCT"
    run_wrk "GET /api/products/{id}" "bv" "$BASE/api/products/$PRODUCT"
    run_wrk "GET /api/products" "native" "$NATIVE_BASE/api/products"
    run_wrk "GET /api/products" "bv" "$BASE/api/products"
fi
stop "$NATIVE_PID"; NATIVE_PID=""

CHECKOUT_IDLE="$(cpu_idle)"
log "== checkout (CPU idle before: $CHECKOUT_IDLE%)"
"$BENCH" checkout --url "$BASE" --admin "http://127.0.0.1:$ADMIN_PORT" --db "$DB_URL" \
    --bv-pid "$BV_PID" --clk-tck "$(getconf CLK_TCK)" --customers "$CUSTOMERS" \
    --warmup "$CHECKOUT_WARMUP" --clients "$CLIENTS" --tag "$TAG" \
    ${RATE:+--rate "$RATE"} --out "$WORK/checkout.txt" --breakdown "$WORK/breakdown.md"
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
stop "$BV_PID"; BV_PID=""
SINK_STATS="none"
if [[ -n "$SINK_PID" ]]; then
    SINK_STATS="$(curl -sf "http://127.0.0.1:$SINK_PORT/stats" | awk '{ printf "%s%s: %s requests, %.1f MB", sep, $1, $2, $3 / 1e6; sep = "; " }')"
    [[ -n "$SINK_STATS" ]] || { log "tracing was on but bv exported nothing to the sink"; exit 1; }
    stop "$SINK_PID"; SINK_PID=""
fi
BV_WARNINGS="$(grep -cE ' (WARN|ERROR) ' "$WORK/bv.log" || true)"

# ---------------------------------------------------------------- report
get() { awk -v k="$1" '$1 == k { $1 = ""; sub(/^ /, ""); print; exit }' "$WORK/checkout.txt"; }
rps_of() { # ENDPOINT NAME
    for i in "${!NAMES[@]}"; do
        [[ "${ENDPOINTS[$i]}" == "$1" && "${NAMES[$i]}" == "$2" ]] && { echo "${RPS[$i]}"; return; }
    done
}
HELLO_RPS="$(rps_of "GET /hello/" "bv (hello component)")"
BV_GET_RPS="$(rps_of "GET /api/products/{id}" bv)"
STAMP="$(date +%Y-%m-%d-%H%M)"
RESULTS="$ROOT/loadtest/results/commerce-$STAMP.md"
COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
[[ -n "$(git -C "$ROOT" status --porcelain -- triggers components shared 2>/dev/null)" ]] && COMMIT="$COMMIT (uncommitted changes)"
mkdir -p "$ROOT/loadtest/results"
{
    echo "# Commerce services — $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- Machine: $(nproc) cores ($(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)); wrk, the driver, bv, PostgreSQL $(psql_ -d postgres -Atc 'SHOW server_version') and Redis share it. Load average (1, 5, 15 min) before: $LOAD_BEFORE; after: $LOAD_AFTER."
    echo "- App: the root \`spin.toml\` (a temporary copy: sources absolute, \`db_url\` and \`SPIN_VARIABLE_DB_URL\` on the scratch database \`$DB\`, the cart's \`cart_key_prefix\` set) under \`bv up\`, instance policy reuse; bv at $COMMIT, release build; $BV_WARNINGS warning/error lines in bv's log."
    envs="DURATION=$DURATION CONNECTIONS=$CONNECTIONS CUSTOMERS=$CUSTOMERS CLIENTS=$CLIENTS"
    [[ "$GETS" == 0 ]] && envs="$envs GETS=0"
    [[ "$SUBSCRIPTIONS" == 0 ]] && envs="$envs SUBSCRIPTIONS=0"
    [[ "$TRACING" == 1 ]] && envs="$envs TRACING=1"
    [[ -n "$RATE" ]] && envs="$envs RATE=$RATE"
    echo "- Command: \`$envs bash loadtest/commerce.sh\`."
    [[ "$TRACING" == 1 ]] && echo "- **Tracing on**: traces and metrics exported over OTLP (http/protobuf, batch) to \`commerce-bench otlp-sink\`, which received $SINK_STATS."
    if [[ "$SUBSCRIPTIONS" == 0 ]]; then
        echo "- **Variant: SUBSCRIPTIONS=0** — the manifest's \`[[trigger.postgres]]\` tables left out (no event subscription runs; the sweeper's cron stays): not the app as shipped, but what its subscriptions cost."
    fi
    echo
    if [[ "$GETS" != 0 ]]; then
    echo "## Product GETs"
    echo
    echo "\`wrk -t1 -c$CONNECTIONS -d${DURATION}s --latency\` after a ${WARMUP}s warm-up, one endpoint at a time. *native* is \`commerce-bench native-product\`: the component's SQL on the same database and the same body (checked byte for byte before loading), hyper + deadpool-postgres (16 connections, statements prepared once per connection), the pool shape bv's Postgres host uses."
    echo
    echo "| endpoint | server | req/s | p50 | p99 | bv / native | non-2xx | CPU idle before |"
    echo "|---|---|---:|---:|---:|---:|---|---:|"
    for i in "${!NAMES[@]}"; do
        ratio="—"
        if [[ "${NAMES[$i]}" == bv ]]; then
            native="$(rps_of "${ENDPOINTS[$i]}" native)"
            ratio="$(awk -v a="${RPS[$i]}" -v b="$native" 'BEGIN { printf "%.2f×", a / b }')"
        fi
        printf '| %s | %s | %.0f | %s | %s | %s | %s | %s%% |\n' "${ENDPOINTS[$i]}" "${NAMES[$i]}" "${RPS[$i]}" \
            "$(ms "${P50[$i]}")" "$(ms "${P99[$i]}")" "$ratio" "${ERRS[$i]}" "${IDLE[$i]}"
    done
    echo
    echo "bv's product GET is $(awk -v a="$BV_GET_RPS" -v b="$HELLO_RPS" 'BEGIN { printf "%.2f×", a / b }') of the hello component's rate in the same bv (per request: $(awk -v a="$BV_GET_RPS" 'BEGIN { printf "%.0f", 1e6 / a }') µs against $(awk -v b="$HELLO_RPS" 'BEGIN { printf "%.0f", 1e6 / b }') µs of wall-clock time at $CONNECTIONS connections)."
    echo
    fi
    echo "## Checkout"
    echo
    echo "$(get products) demo products restocked with 100,000 units each; $(get warmup) warm-up checkouts, then $(get customers) measured, from $(get clients) connections: each customer's cart holds 1 or 2 lines of 1–2 units ($(get units) units over all $(( $(get warmup) + $(get customers) )) orders), checked out with \`POST /api/orders\`, its own \`Idempotency-Key\` and \`{\"card\":{\"token\":\"tok_visa\"}}\`. CPU idle in the second before: $CHECKOUT_IDLE%."
    echo
    if [[ -n "$RATE" ]]; then
        echo "The measured checkouts were **offered at $RATE per second (open model)**: each started on schedule whatever the earlier ones took, on an idle connection or a new one; its latency runs from its scheduled start (warm-up and carts from $(get clients) connections)."
        echo
    fi
    echo "| checkouts | connections / offered rate | checkouts/s | first half / second half | p50 | p90 | p99 | max | errors |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    offered="$(get clients)"; [[ -n "$RATE" ]] && offered="$RATE/s"
    echo "| $(get customers) | $offered | $(get checkout_rate) | $(get checkout_rate_first_half) / $(get checkout_rate_second_half) | $(get checkout_p50_ms) ms | $(get checkout_p90_ms) ms | $(get checkout_p99_ms) ms | $(get checkout_max_ms) ms | $(get checkout_errors) |"
    echo
    echo "- Check (database): $(get check)."
    [[ "$GETS" != 0 ]] && echo "- Against the product GET in the same bv: a checkout costs as much wall-clock time as $(awk -v a="$BV_GET_RPS" -v b="$(get checkout_rate)" 'BEGIN { printf "%.0f", a / b }') product GETs (checkouts/s ÷ product GETs/s = $(awk -v a="$BV_GET_RPS" -v b="$(get checkout_rate)" 'BEGIN { printf "%.4f", b / a }'))."
    echo "- CPU per measured checkout (machine $(get machine_busy_pct)% busy meanwhile): bv process $(get cpu_bv_us) µs; PostgreSQL backends of the components' pooled connections $(get cpu_pg_pool_us) µs, of the Postgres trigger's $(get trigger_backends) connections (the app's event subscriptions) $(get cpu_pg_trigger_us) µs."
    echo "- Database per measured checkout: $(get db_commits) transactions committed (each statement outside \`BEGIN … COMMIT\` counts as one; the sweeper's cron and the subscriptions' polls included), $(get db_rollbacks) rolled back, $(get db_rows_written) rows written, $(get events) events published (the outbox held $(get outbox_rows) rows at the end)."
    echo "- Cart preparation: $(get carts) carts ($(get cart_adds) \`POST /api/carts/me/items\`) at $(get cart_rate) carts/s, per cart p50 $(get cart_p50_ms) ms, p99 $(get cart_p99_ms) ms ($(get clients) connections)."
    echo
    echo "Requests per component during the measured checkouts (bv's \`bv_http_request_duration_seconds\`: request to response headers; service-chained calls count at the callee, so the order's time includes its callees'):"
    echo
    cat "$WORK/breakdown.md"
} >"$RESULTS"
if [[ -n "${SUMMARY:-}" ]]; then
    {
        echo "tracing $TRACING"
        echo "hello_rps ${HELLO_RPS:-0}"
        echo "product_rps ${BV_GET_RPS:-0}"
        echo "list_rps $(rps_of "GET /api/products" bv)"
        echo "native_product_rps $(rps_of "GET /api/products/{id}" native)"
        echo "native_list_rps $(rps_of "GET /api/products" native)"
        for i in "${!NAMES[@]}"; do
            [[ "${NAMES[$i]}" == bv && "${ENDPOINTS[$i]}" == "GET /api/products/{id}" ]] && echo "product_p99_us ${P99[$i]}"
        done
        echo "checkout_rate $(get checkout_rate)"
        echo "checkout_p50_ms $(get checkout_p50_ms)"
        echo "checkout_p99_ms $(get checkout_p99_ms)"
        echo "checkout_errors $(get checkout_errors)"
        echo "cpu_bv_us $(get cpu_bv_us)"
        echo "sink $SINK_STATS"
        echo "results ${RESULTS#"$ROOT"/}"
    } >"$SUMMARY"
fi
echo
cat "$RESULTS"
echo
echo "Written to ${RESULTS#"$ROOT"/}"
