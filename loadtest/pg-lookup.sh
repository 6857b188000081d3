#!/usr/bin/env bash
# Postgres lookup benchmark — a benchmark, not a test.
#
#   bash loadtest/pg-lookup.sh
#
# One database (bv_bench_pg_lookup on 127.0.0.1:5432, recreated and seeded
# with $ROWS products), two servers answering GET /pg/product/<id> with the
# same JSON, loaded the same way one after the other:
#   native   loadtest/pg-lookup (hyper + deadpool-postgres, 16 connections)
#   bv       bv up on loadtest/pg-lookup/spin.toml (the pg-probe component)
# Each: 2 s warm-up, then wrk -t1 -c16 -d${DURATION}s --latency on random ids
# (loadtest/pg-lookup/lookup.lua). Prints req/s, p50, p99 and the ratio; writes
# the table to loadtest/results/pg-lookup-<date>.md.
#
# Environment:
#   DURATION=8   seconds of each measured run     WARMUP=2  warm-up seconds
#   ROWS=10000   products seeded                  PGHOST/PGPORT/PGUSER  the server
#   CARGO_TARGET_DIR  default $HOME/.cache/bitvelocity/target
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DURATION="${DURATION:-8}"
WARMUP="${WARMUP:-2}"
export ROWS="${ROWS:-10000}"
PGHOST="${PGHOST:-127.0.0.1}"
PGPORT="${PGPORT:-5432}"
PGUSER="${PGUSER:-postgres}"
DB=bv_bench_pg_lookup
DB_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$DB?sslmode=disable"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bitvelocity/target}"
BV="$CARGO_TARGET_DIR/release/bv"
NATIVE="$CARGO_TARGET_DIR/release/pg-lookup-native"
LUA="$ROOT/loadtest/pg-lookup/lookup.lua"
WORK="$(mktemp -d -t bv-pg-lookup.XXXXXX)"
SERVER_PID=""

log() { printf '%s\n' "$*" >&2; }

stop_server() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
trap 'stop_server; rm -rf "$WORK"' EXIT
trap 'log "interrupted"; exit 130' INT

# ---------------------------------------------------------------- prerequisites
if ! command -v wrk >/dev/null; then
    log "wrk is missing: installing it with apt-get"
    SUDO=""; [[ "$(id -u)" != 0 ]] && SUDO="sudo"
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq && $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq wrk
fi
for tool in curl psql; do
    command -v "$tool" >/dev/null || { log "$tool is required"; exit 1; }
done

log "== database $DB ($ROWS products)"
psql_() { psql -v ON_ERROR_STOP=1 -q -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" "$@"; }
psql_ -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
psql_ -d "$DB" <<SQL
CREATE TABLE products (id int PRIMARY KEY, name text NOT NULL,
                       price numeric(10,2) NOT NULL, stock int NOT NULL);
INSERT INTO products
SELECT i, 'product ' || i, round((i % 1000) * 1.37 + 0.99, 2), i % 97
FROM generate_series(1, $ROWS) AS i;
ANALYZE products;
SQL

log "== building (release, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
cargo build --release -p bv -p pg-lookup-native
# The component lands in components/target (the manifest's source), so the
# component build runs without the host's CARGO_TARGET_DIR.
env -u CARGO_TARGET_DIR "$BV" build --from "$ROOT/loadtest/pg-lookup/spin.toml"

free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
    done
    return 1
}

to_us() {
    awk -v v="$1" 'BEGIN { n = v + 0
        if (v ~ /us$/) m = 1; else if (v ~ /ms$/) m = 1000; else if (v ~ /s$/) m = 1000000; else m = 1
        printf "%.1f", n * m }'
}

NAMES=(); RPS=(); P50=(); P99=(); ERRS=(); SAMPLES=()

# run_peer NAME BASE_URL -- COMMAND...
run_peer() {
    local name="$1" base="$2"; shift 3
    local i="${#NAMES[@]}"
    local logfile="$WORK/server-$i.log" out="$WORK/wrk-$i.txt"
    log "== $name: $*"
    env -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE "$@" >"$logfile" 2>&1 &
    SERVER_PID=$!
    local sample=""
    for _ in $(seq 1 600); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then log "$name exited:"; cat "$logfile" >&2; exit 1; fi
        if sample="$(curl -sf --max-time 2 "$base/pg/product/42")"; then break; fi
        sleep 0.1
    done
    [[ -n "$sample" ]] || { log "$name never answered"; cat "$logfile" >&2; exit 1; }
    SAMPLES+=("$sample")
    log "   GET /pg/product/42 -> $sample"
    wrk -t1 -c16 -d"${WARMUP}s" -s "$LUA" "$base" >/dev/null
    wrk -t1 -c16 -d"${DURATION}s" --latency -s "$LUA" "$base" >"$out"
    stop_server
    local rps p50 p99 non2xx
    rps="$(awk '/^Requests\/sec:/ { print $2 }' "$out")"
    p50="$(awk '$1 == "50%" { print $2 }' "$out")"
    p99="$(awk '$1 == "99%" { print $2 }' "$out")"
    non2xx="$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")"
    [[ -n "$rps" && -n "$p50" ]] || { log "cannot parse wrk output:"; cat "$out" >&2; exit 1; }
    NAMES+=("$name"); RPS+=("$rps"); P50+=("$(to_us "$p50")"); P99+=("$(to_us "$p99")")
    ERRS+=("${non2xx:-0}")
    log "   $rps req/s, p50 $p50, p99 $p99, non-2xx: ${non2xx:-0}"
}

port="$(free_port)"
run_peer "native (hyper + deadpool-postgres)" "http://127.0.0.1:$port" -- \
    "$NATIVE" --db "$DB_URL" --listen "127.0.0.1:$port"

port="$(free_port)"; admin="$(free_port)"
run_peer "bv (pg-probe, reuse)" "http://127.0.0.1:$port" -- \
    env SPIN_VARIABLE_DB_URL="$DB_URL" RUST_LOG="${RUST_LOG:-warn}" \
    "$BV" up --from "$ROOT/loadtest/pg-lookup/spin.toml" --listen "127.0.0.1:$port" \
    --admin-listen "127.0.0.1:$admin" --state-dir "$WORK/state" \
    --cache-dir "$HOME/.cache/bitvelocity/loadtest-bv-cache"

if [[ "${SAMPLES[0]}" != "${SAMPLES[1]}" ]]; then
    log "the two servers answer differently: ${SAMPLES[0]} vs ${SAMPLES[1]}"
    exit 1
fi

# ---------------------------------------------------------------- report
STAMP="$(date +%Y-%m-%d-%H%M)"
RESULTS="$ROOT/loadtest/results/pg-lookup-$STAMP.md"
COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
[[ -n "$(git -C "$ROOT" status --porcelain -- triggers 2>/dev/null)" ]] && COMMIT="$COMMIT (uncommitted changes)"
mkdir -p "$ROOT/loadtest/results"
{
    echo "# Postgres lookup — $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- Machine: $(nproc) cores ($(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)); wrk, both servers and PostgreSQL $(psql_ -d postgres -Atc 'SHOW server_version') share it."
    echo "- Query: \`SELECT id, name, price::text, stock FROM products WHERE id = \$1\` on $ROWS rows, random ids; same JSON from both (checked)."
    echo "- Load: \`wrk -t1 -c16 -d${DURATION}s --latency -s loadtest/pg-lookup/lookup.lua\` after ${WARMUP}s warm-up; one server at a time."
    echo "- Command: \`DURATION=$DURATION bash loadtest/pg-lookup.sh\`; bv at $COMMIT, release build."
    echo
    echo "| server | req/s | p50 | p99 | ratio to native | non-2xx |"
    echo "|---|---:|---:|---:|---:|---:|"
    for i in "${!NAMES[@]}"; do
        printf '| %s | %.0f | %.3f ms | %.3f ms | %s | %s |\n' "${NAMES[$i]}" "${RPS[$i]}" \
            "$(awk -v u="${P50[$i]}" 'BEGIN { print u / 1000 }')" \
            "$(awk -v u="${P99[$i]}" 'BEGIN { print u / 1000 }')" \
            "$(awk -v a="${RPS[$i]}" -v b="${RPS[0]}" 'BEGIN { printf "%.2f×", a / b }')" "${ERRS[$i]}"
    done
} >"$RESULTS"
echo
cat "$RESULTS"
echo
echo "Written to ${RESULTS#"$ROOT"/}"
