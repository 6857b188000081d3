#!/usr/bin/env bash
# Durable-events benchmark — a benchmark, not a test.
#
#   bash loadtest/events.sh
#
# Events go producer → bv_events.outbox → consumer → read model, on the
# real PostgreSQL, in a database of their own (bv_bench_events, recreated
# for each run and dropped at the end). Three runs, one after the other,
# with the same producer and the same load:
#   native  bv up on loadtest/events-bench/producer.toml (the event-producer
#           component on POST /products) + `events-bench native-consumer`:
#           the Postgres trigger's loop and the event-consumer component's
#           statements in plain tokio-postgres, each prepared once, with the
#           subscription's max_in_flight (read from the bv manifest) events
#           in flight, one run per subject
#   bv      bv up on loadtest/events-bench/spin.toml: the same producer, and
#           the event-consumer component as a [[trigger.postgres]] subscription
#           (poll_interval_ms = 100, max_in_flight as set there)
# Each run (`events-bench load`): one warm-up event, $TRICKLE one-event
# requests $TRICKLE_GAP_MS apart (idle latency), then a burst of $EVENTS
# events from $CLIENTS connections, $PRODUCTS products with $UPDATES
# update(s) each per request, so the outbox fills while the consumer drains
# it; progress is shown every second. Latency per event is
# seen.at − outbox.recorded_at (both the server's clock_timestamp());
# throughput is events over first to last handled; CPU per event is read
# from /proc while the backlog drains. Prints the table and writes it to
# loadtest/results/events-<date>.md.
#
# Environment:
#   EVENTS=20000  burst events          CLIENTS=4     producer connections
#   PRODUCTS=10   products per request  UPDATES=1     updates per product
#   TRICKLE=50    one-event requests    TRICKLE_GAP_MS=50
#   TIMEOUT=240   longest wait for a run's events (s)
#   KEEP_DB=1     keep the database of the last run
#   PGHOST/PGPORT/PGUSER  the server    CARGO_TARGET_DIR  default $HOME/.cache/bitvelocity/target
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

EVENTS="${EVENTS:-20000}"
CLIENTS="${CLIENTS:-4}"
PRODUCTS="${PRODUCTS:-10}"
UPDATES="${UPDATES:-1}"
TRICKLE="${TRICKLE:-50}"
TRICKLE_GAP_MS="${TRICKLE_GAP_MS:-50}"
TIMEOUT="${TIMEOUT:-240}"
PGHOST="${PGHOST:-127.0.0.1}"
PGPORT="${PGPORT:-5432}"
PGUSER="${PGUSER:-postgres}"
DB=bv_bench_events
# The subscription's max_in_flight: the native consumer gets the same.
IN_FLIGHT="$(awk -F' *= *' '$1 == "max_in_flight" { print $2; exit }' "$ROOT/loadtest/events-bench/spin.toml")"
IN_FLIGHT="${IN_FLIGHT:-4}"
DB_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$DB?sslmode=disable"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bitvelocity/target}"
BV="$CARGO_TARGET_DIR/release/bv"
BENCH="$CARGO_TARGET_DIR/release/events-bench"
APP_DIR="$ROOT/loadtest/events-bench"
WORK="$(mktemp -d -t bv-events.XXXXXX)"
PIDS=()

log() { printf '%s\n' "$*" >&2; }
psql_() { psql -v ON_ERROR_STOP=1 -q -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" "$@"; }

stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null && kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
}
cleanup() {
    stop_all
    if [[ -z "${KEEP_DB:-}" ]]; then
        psql_ -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

for tool in curl psql; do
    command -v "$tool" >/dev/null || { log "$tool is required"; exit 1; }
done

log "== building (release, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
cargo build --release -p bv -p events-bench
# The components land in components/target (the manifest's sources), so the
# component build runs without the host's CARGO_TARGET_DIR.
env -u CARGO_TARGET_DIR "$BV" build --from "$APP_DIR/spin.toml"

# A port nobody listens on, below the ephemeral range (32768 and up): a
# port in that range may be held by another process's outgoing connection.
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 12000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
    done
    return 1
}

fresh_db() {
    psql_ -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
}

# start NAME LOGFILE COMMAND... — runs COMMAND in the background.
start() {
    local name="$1" logfile="$2"; shift 2
    log "== $name: $*"
    env -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE "$@" >"$logfile" 2>&1 &
    PIDS+=("$!")
}

# wait_for NAME LOGFILE PID CHECK... — until CHECK succeeds (60 s at most).
wait_for() {
    local name="$1" logfile="$2" pid="$3"; shift 3
    for _ in $(seq 1 600); do
        if ! kill -0 "$pid" 2>/dev/null; then log "$name exited:"; cat "$logfile" >&2; exit 1; fi
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    log "$name did not come up:"; cat "$logfile" >&2; exit 1
}

# The producer answers an empty batch with 201 (and makes its table).
producer_ready() {
    curl -sf --max-time 2 -o /dev/null -X POST -H 'content-type: application/json' \
        -d '{"products":[]}' "$1"
}

bv_up() { # MANIFEST PORT ADMIN — the command line, in BV_UP
    BV_UP=(env SPIN_VARIABLE_DB_URL="$DB_URL" RUST_LOG="${RUST_LOG:-warn}"
        "$BV" up --from "$1" --listen "127.0.0.1:$2" --admin-listen "127.0.0.1:$3"
        --state-dir "$WORK/state" --cache-dir "$HOME/.cache/bitvelocity/loadtest-bv-cache")
}

load() { # LABEL URL CONSUMER_PID
    "$BENCH" load --label "$1" --url "$2" --consumer-pid "$3" --clk-tck "$(getconf CLK_TCK)" \
        --db "$DB_URL" --events "$EVENTS" \
        --clients "$CLIENTS" --products "$PRODUCTS" --updates "$UPDATES" \
        --trickle "$TRICKLE" --trickle-gap-ms "$TRICKLE_GAP_MS" --timeout-s "$TIMEOUT" \
        --out "$WORK/$1.txt"
}

LOADAVG="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------- native
run_native() { # LABEL [native-consumer options]
    local label="$1"; shift
    fresh_db
    start "native consumer" "$WORK/$label-consumer.log" \
        "$BENCH" native-consumer --db "$DB_URL" --subscription bench --poll-interval-ms 100 \
        --in-flight "$IN_FLIGHT" "$@"
    local consumer="${PIDS[-1]}"
    wait_for "native consumer" "$WORK/$label-consumer.log" "$consumer" \
        grep -q "native consumer ready" "$WORK/$label-consumer.log"
    local port admin
    port="$(free_port)"; admin="$(free_port)"
    bv_up "$APP_DIR/producer.toml" "$port" "$admin"
    start "bv (producer only)" "$WORK/$label-bv.log" "${BV_UP[@]}"
    wait_for "bv" "$WORK/$label-bv.log" "${PIDS[-1]}" producer_ready "http://127.0.0.1:$port/products"
    load "$label" "http://127.0.0.1:$port/products" "$consumer"
    stop_all
    grep -o 'native consumer timings: .*' "$WORK/$label-consumer.log" >"$WORK/$label-timings.txt" ||
        echo "native consumer timings: none reported" >"$WORK/$label-timings.txt"
}
run_native native

# ---------------------------------------------------------------- bv
fresh_db
port="$(free_port)"; admin="$(free_port)"
bv_up "$APP_DIR/spin.toml" "$port" "$admin"
start "bv (producer + event-consumer via [[trigger.postgres]])" "$WORK/bv.log" "${BV_UP[@]}"
wait_for "bv" "$WORK/bv.log" "${PIDS[-1]}" producer_ready "http://127.0.0.1:$port/products"
load bv "http://127.0.0.1:$port/products" "${PIDS[-1]}"
stop_all

# ---------------------------------------------------------------- report
get() { awk -v k="$2" '$1 == k { $1 = ""; sub(/^ /, ""); print; exit }' "$WORK/$1.txt"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0 || a == "-" || b == "-") print "—"; else printf "%.2f×", a / b }'; }
fmt0() { awk -v v="$1" 'BEGIN { if (v == "-") print "—"; else printf "%.0f", v }'; }
fmt1() { awk -v v="$1" 'BEGIN { if (v == "-") print "—"; else printf "%.1f", v }'; }
timings() { sed 's/^native consumer timings: //' "$WORK/$1-timings.txt"; }

STAMP="$(date +%Y-%m-%d-%H%M)"
RESULTS="$ROOT/loadtest/results/events-$STAMP.md"
COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
[[ -n "$(git -C "$ROOT" status --porcelain -- triggers components shared 2>/dev/null)" ]] && COMMIT="$COMMIT (uncommitted changes)"
mkdir -p "$ROOT/loadtest/results"
{
    echo "# Durable events — $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- Machine: $(nproc) cores ($(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)); the load driver, bv, the native consumer and PostgreSQL $(psql_ -d postgres -Atc 'SHOW server_version') share it; load average before the runs: $LOADAVG."
    echo "- Producer: the event-producer component under \`bv up\` (instance policy reuse), POST /products, $(get bv per_request) events per request ($PRODUCTS products, $UPDATES update(s) each, one transaction), $CLIENTS connections, $(get bv events) events ($(get bv requests) requests); before that one warm-up event and $TRICKLE one-event requests ${TRICKLE_GAP_MS} ms apart (\"idle\")."
    echo "- bv: the event-consumer component as a \`[[trigger.postgres]]\` subscription (poll_interval_ms 100, max_in_flight $IN_FLIGHT), its instances kept between events (instance policy reuse: up to 128 events each, none after a failure)."
    echo "- native: \`events-bench native-consumer --in-flight $IN_FLIGHT\` — the trigger's loop (same position query, batches of 128, one run per subject with $IN_FLIGHT at once, position moved per batch) and the component's statements per event on tokio-postgres connections of its own (one per event in flight), each prepared once."
    echo "- Latency: \`seen.at − outbox.recorded_at\` per event (server clock). Handled/s: events over first to last handled. CPU per event: user + system time of the consumer process (bv, or the native consumer) and of the PostgreSQL backends of this database (the driver's own left out) while the backlog left when publishing ended drains, over those events."
    echo "- Checks (every event handled once, read model complete, no retries, no dead letters): native $(get native check), bv $(get bv check)."
    echo "- Native consumer's own wall-clock timings (summed over the events in flight): $(timings native)."
    echo "- Command: \`EVENTS=$EVENTS CLIENTS=$CLIENTS PRODUCTS=$PRODUCTS UPDATES=$UPDATES bash loadtest/events.sh\`; bv at $COMMIT, release build."
    echo
    echo "| | native | bv | bv / native |"
    echo "|---|---:|---:|---:|"
    row() { # TITLE KEY FORMAT
        local n b
        n="$(get native "$2")"; b="$(get bv "$2")"
        printf '| %s | %s | %s | %s |\n' "$1" "$($3 "$n")" "$($3 "$b")" "$(ratio "$b" "$n")"
    }
    row "handled events/s (burst, first to last handled)" consumer_eps fmt0
    row "events/s, first publish to last handled" e2e_eps fmt0
    row "handled events/s after the last publish" drain_eps fmt0
    row "backlog when publishing ended (events)" backlog_at_publish_end fmt0
    row "latency p50, burst (ms)" lat_p50_ms fmt1
    row "latency p99, burst (ms)" lat_p99_ms fmt1
    row "latency max, burst (ms)" lat_max_ms fmt1
    row "latency p50, idle (ms)" trickle_p50_ms fmt1
    row "latency p99, idle (ms)" trickle_p99_ms fmt1
    row "latency max, idle (ms)" trickle_max_ms fmt1
    row "consumer process CPU per event, draining (µs)" cpu_consumer_us fmt0
    row "PostgreSQL backends' CPU per event, draining (µs)" cpu_backends_us fmt0
    row "producer requests/s" producer_rps fmt0
    row "producer events/s published" producer_eps fmt0
    row "producer request p50 (ms)" producer_p50_ms fmt1
    row "producer request p99 (ms)" producer_p99_ms fmt1
} >"$RESULTS"
echo
cat "$RESULTS"
echo
echo "Written to ${RESULTS#"$ROOT"/}"
