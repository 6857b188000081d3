#!/usr/bin/env bash
# IoT ingestion benchmark — a benchmark, not a test.
#
#   bash loadtest/iot.sh
#
# Simulated devices (`iot-bench simulate`: a temperature-like signal with
# injected anomalies, half JSON and half binary, QoS 1) publish to a
# Mosquitto of the benchmark's own; the messages are ingested into a
# database of their own (bv_bench_iot, recreated for each run, dropped at the
# end). Two runs, one after the other, with the same devices and load:
#   native  `iot-bench native-consumer`: the MQTT trigger's loop and the
#           iot-ingest component's statements in plain rumqttc +
#           tokio-postgres, each prepared once
#   bv      bv up on loadtest/iot-bench/spin.toml: the iot-ingest component
#           on the MQTT trigger
# Each run: $PROBES probes one at a time (idle publish → stored latency,
# polled from the database every 0.5 ms), then $DEVICES devices publish
# $MESSAGES messages each as fast as the broker takes them; throughput is
# messages stored per second while the backlog drains. Every message is
# stored and evaluated (two values, the detector on each, anomalies to the
# outbox). Prints the table and writes it to loadtest/results/iot-<date>.md.
#
# Environment:
#   DEVICES=20  MESSAGES=500 (per device)  PROBES=200  TIMEOUT=300 (s)
#   KEEP_DB=1   keep the database of the last run
#   PGHOST/PGPORT/PGUSER  the server    CARGO_TARGET_DIR  default $HOME/.cache/bitvelocity/target
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DEVICES="${DEVICES:-20}"
MESSAGES="${MESSAGES:-500}"
PROBES="${PROBES:-200}"
TIMEOUT="${TIMEOUT:-300}"
PGHOST="${PGHOST:-127.0.0.1}"
PGPORT="${PGPORT:-5432}"
PGUSER="${PGUSER:-postgres}"
DB=bv_bench_iot
DB_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$DB?sslmode=disable"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bitvelocity/target}"
BV="$CARGO_TARGET_DIR/release/bv"
BENCH="$CARGO_TARGET_DIR/release/iot-bench"
APP="$ROOT/loadtest/iot-bench/spin.toml"
WORK="$(mktemp -d -t bv-iot.XXXXXX)"
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
    [[ -n "${MOSQUITTO_PID:-}" ]] && kill "$MOSQUITTO_PID" 2>/dev/null || true
    if [[ -z "${KEEP_DB:-}" ]]; then
        psql_ -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

for tool in psql mosquitto; do
    command -v "$tool" >/dev/null || { log "$tool is required (Debian packages postgresql-client, mosquitto)"; exit 1; }
done

log "== building (release, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
cargo build --release -p bv -p iot-bench
env -u CARGO_TARGET_DIR "$BV" build --from "$APP"

# A port nobody listens on, below the ephemeral range.
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 12000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
    done
    return 1
}

MQTT_PORT="$(free_port)"
BROKER="mqtt://127.0.0.1:$MQTT_PORT"
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\nmax_inflight_messages 64\n' \
    "$MQTT_PORT" >"$WORK/mosquitto.conf"
mosquitto -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
MOSQUITTO_PID=$!
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$MQTT_PORT") 2>/dev/null && break; sleep 0.1; done

start() { # NAME LOGFILE COMMAND...
    local name="$1" logfile="$2"; shift 2
    log "== $name"
    env -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE "$@" >"$logfile" 2>&1 &
    PIDS+=("$!")
}

wait_for_line() { # NAME LOGFILE PID TEXT
    for _ in $(seq 1 600); do
        if ! kill -0 "$3" 2>/dev/null; then log "$1 exited:"; cat "$2" >&2; exit 1; fi
        grep -q "$4" "$2" && return 0
        sleep 0.1
    done
    log "$1 did not come up:"; cat "$2" >&2; exit 1
}

run() { # LABEL
    local label="$1"
    psql_ -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
    "$BV" events init --database "$DB_URL" >/dev/null
    "$BENCH" setup --db "$DB_URL" --devices "$DEVICES"
    if [[ "$label" == native ]]; then
        start "native consumer" "$WORK/$label.log" "$BENCH" native-consumer --broker "$BROKER" --db "$DB_URL"
        wait_for_line "native consumer" "$WORK/$label.log" "${PIDS[-1]}" "subscribing"
        sleep 1
    else
        start "bv (iot-ingest on the MQTT trigger)" "$WORK/$label.log" \
            env SPIN_VARIABLE_DB_URL="$DB_URL" SPIN_VARIABLE_MQTT_ADDRESS="$BROKER" RUST_LOG=info \
            "$BV" up --from "$APP" --listen "127.0.0.1:$(free_port)" --admin-listen "127.0.0.1:$(free_port)" \
            --state-dir "$WORK/state" --cache-dir "$HOME/.cache/bitvelocity/loadtest-bv-cache"
        wait_for_line "bv" "$WORK/$label.log" "${PIDS[-1]}" "mqtt trigger: subscribed"
    fi
    log "-- $label: $PROBES probes, one at a time"
    "$BENCH" latency --broker "$BROKER" --db "$DB_URL" --probes "$PROBES" | tee "$WORK/$label-latency.txt"
    log "-- $label: $DEVICES devices × $MESSAGES messages"
    "$BENCH" simulate --broker "$BROKER" --devices "$DEVICES" --messages "$MESSAGES" >"$WORK/$label-publish.txt" &
    local publisher=$!
    "$BENCH" wait --db "$DB_URL" --messages $((DEVICES * MESSAGES + PROBES)) --timeout "$TIMEOUT" |
        tee "$WORK/$label-rate.txt"
    wait "$publisher"
    psql_ -d "$DB" -Atc "SELECT count(*) FROM iot.anomalies" >"$WORK/$label-anomalies.txt"
    psql_ -d "$DB" -Atc "SELECT count(*) FROM iot.parked" >"$WORK/$label-parked.txt"
    stop_all
}

LOADAVG="$(cut -d' ' -f1-3 /proc/loadavg)"
run native
run bv

field() { awk -v k="$2" '$1 == k { print $'"$3"'; exit }' "$WORK/$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "—"; else printf "%.2f×", a / b }'; }
STAMP="$(date +%Y-%m-%d-%H%M)"
RESULTS="$ROOT/loadtest/results/iot-$STAMP.md"
COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
[[ -n "$(git -C "$ROOT" status --porcelain -- triggers components shared 2>/dev/null)" ]] && COMMIT="$COMMIT (uncommitted changes)"
mkdir -p "$ROOT/loadtest/results"
{
    echo "# IoT ingestion — $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- Machine: $(nproc) cores; simulator, Mosquitto $(mosquitto -h 2>/dev/null | awk 'NR==1 { print $3 }'), consumer and PostgreSQL $(psql_ -d postgres -Atc 'SHOW server_version') share it; load average before the runs: $LOADAVG."
    echo "- Commit $COMMIT. $DEVICES devices × $MESSAGES messages (two values each, half JSON, half binary), QoS 1; $PROBES idle probes."
    echo
    echo "| consumer | messages/s | idle p50 (ms) | idle p99 (ms) | anomalies | parked |"
    echo "|---|---:|---:|---:|---:|---:|"
    for label in native bv; do
        echo "| $label | $(field "$label-rate.txt" RATE 2) | $(field "$label-latency.txt" LATENCY 2) | $(field "$label-latency.txt" LATENCY 3) | $(cat "$WORK/$label-anomalies.txt") | $(cat "$WORK/$label-parked.txt") |"
    done
    echo
    echo "bv / native throughput: $(ratio "$(field bv-rate.txt RATE 2)" "$(field native-rate.txt RATE 2)")."
} | tee "$RESULTS"
log "written to $RESULTS"
