#!/usr/bin/env bash
# Kafka bridge benchmark — a benchmark, not a test.
#
#   bash loadtest/kafka.sh
#
# On the real PostgreSQL (a database of its own, bv_bench_kafka, made anew
# for each run and dropped at the end) and a local Kafka-protocol broker
# (tansu, infra/scripts/kafka-broker.sh; started anew for each run, so every
# run finds empty topics), the same work twice: by bv-kafka-bridge and by
# `kafka-bench`'s native peer, plain rdkafka + tokio-postgres doing the same
# reads, records and writes without the bridge's subscription bookkeeping,
# lock, LISTEN and metrics.
#   out   $EVENTS events already in the outbox → the topic; events/s from the
#         first to the last record a reader sees
#   in    $EVENTS binary-mode CloudEvents already on a topic → the outbox
#         (checked against their schema, deduplicated); events/s from the
#         first to the last row
#   lat   one event per transaction at $RATE/s for $DURATION s, each timed
#         from its commit to its arrival on the topic (p50, p99)
# Writes loadtest/results/kafka-<date>.md.
#
# Environment:
#   EVENTS=100000  RATE=200  DURATION=10 (seconds)
#   PGHOST/PGPORT/PGUSER  the server    CARGO_TARGET_DIR  default $HOME/.cache/bitvelocity/target
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

EVENTS="${EVENTS:-100000}"
RATE="${RATE:-200}"
DURATION="${DURATION:-10}"
for v in EVENTS RATE DURATION; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "$v must be a positive integer, not '${!v}'" >&2; exit 1; }
done
PGHOST="${PGHOST:-127.0.0.1}"
PGPORT="${PGPORT:-5432}"
PGUSER="${PGUSER:-postgres}"
DB=bv_bench_kafka
DB_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$DB?sslmode=disable"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bitvelocity/target}"
BRIDGE="$CARGO_TARGET_DIR/release/bv-kafka-bridge"
BENCH="$CARGO_TARGET_DIR/release/kafka-bench"
TOPIC=bv.stock.restocked.v1
IN_TOPIC=bench.in
WORK="$(mktemp -d -t bv-kafka.XXXXXX)"
BROKER_PID="" BRIDGE_PID="" PEER_PID=""

log() { printf '%s\n' "$*" >&2; }
stop() { [[ -n "$1" ]] && kill "$1" 2>/dev/null && wait "$1" 2>/dev/null || true; }
psql_() { psql -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -d "$1" -qAt -v ON_ERROR_STOP=1 -c "$2"; }
cleanup() {
    stop "$PEER_PID"; stop "$BRIDGE_PID"; stop "$BROKER_PID"
    psql_ postgres "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT

bash infra/scripts/services.sh
log "== building (release, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
cargo build --release -p bv-kafka-bridge -p kafka-bench
BROKER_BIN="$(bash infra/scripts/kafka-broker.sh path)"

free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((15000 + RANDOM % 15000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
    done
    return 1
}
PORT="$(free_port)"
BROKERS="127.0.0.1:$PORT"

# A fresh broker and database for each run.
fresh() {
    stop "$BROKER_PID"
    local url="tcp://$BROKERS"
    "$BROKER_BIN" broker --listener-url "$url" --advertised-listener-url "$url" \
        --storage-engine memory://tansu/ >"$WORK/broker.log" 2>&1 &
    BROKER_PID=$!
    for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
    psql_ postgres "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
    psql_ postgres "CREATE DATABASE $DB" >/dev/null
    psql_ "$DB" "SET client_min_messages = warning; $(cat shared/events/postgres/schema.sql)" >/dev/null
}

bridge() { # CONFIG_TEXT
    printf '%s\n' "$1" >"$WORK/bridge.toml"
    "$BRIDGE" --from "$WORK/bridge.toml" --brokers "$BROKERS" --db-url "$DB_URL" \
        --admin-listen "127.0.0.1:$(free_port)" >"$WORK/bridge.log" 2>&1 &
    BRIDGE_PID=$!
}
OUT_CONFIG='[[out]]
events = ["com.bitvelocity.*"]'
IN_CONFIG="[[in]]
topic = \"$IN_TOPIC\""

declare -A R
log "== out, bridge: $EVENTS events outbox → Kafka"
fresh; "$BENCH" fill --db "$DB_URL" --events "$EVENTS"
bridge "$OUT_CONFIG"
read -r R[out_bridge] _ < <("$BENCH" watch-topic --brokers "$BROKERS" --topic "$TOPIC" --want "$EVENTS")
stop "$BRIDGE_PID"; BRIDGE_PID=""
log "== out, native peer"
fresh; "$BENCH" fill --db "$DB_URL" --events "$EVENTS"
"$BENCH" out-native --db "$DB_URL" --brokers "$BROKERS" --events "$EVENTS" &
PEER_PID=$!
read -r R[out_native] _ < <("$BENCH" watch-topic --brokers "$BROKERS" --topic "$TOPIC" --want "$EVENTS")
stop "$PEER_PID"; PEER_PID=""

log "== in, bridge: $EVENTS records Kafka → outbox"
fresh; "$BENCH" in-produce --brokers "$BROKERS" --topic "$IN_TOPIC" --events "$EVENTS"
bridge "$IN_CONFIG"
read -r R[in_bridge] _ < <("$BENCH" watch-outbox --db "$DB_URL" --want "$EVENTS")
stop "$BRIDGE_PID"; BRIDGE_PID=""
log "== in, native peer"
fresh; "$BENCH" in-produce --brokers "$BROKERS" --topic "$IN_TOPIC" --events "$EVENTS"
"$BENCH" in-native --db "$DB_URL" --brokers "$BROKERS" --topic "$IN_TOPIC" --events "$EVENTS" &
PEER_PID=$!
read -r R[in_native] _ < <("$BENCH" watch-outbox --db "$DB_URL" --want "$EVENTS")
stop "$PEER_PID"; PEER_PID=""

log "== latency, bridge: $RATE events/s for $DURATION s"
fresh; "$BENCH" fill --db "$DB_URL" --events 1
bridge "$OUT_CONFIG"
"$BENCH" watch-topic --brokers "$BROKERS" --topic "$TOPIC" --want 1 >/dev/null
read -r R[lat_bridge_p50] R[lat_bridge_p99] _ < <("$BENCH" latency --db "$DB_URL" --brokers "$BROKERS" --topic "$TOPIC" --rate "$RATE" --seconds "$DURATION")
stop "$BRIDGE_PID"; BRIDGE_PID=""
log "== latency, native peer (polls the outbox every 5 ms)"
fresh; "$BENCH" fill --db "$DB_URL" --events 1
"$BENCH" out-native --db "$DB_URL" --brokers "$BROKERS" --events 1 --follow &
PEER_PID=$!
"$BENCH" watch-topic --brokers "$BROKERS" --topic "$TOPIC" --want 1 >/dev/null
read -r R[lat_native_p50] R[lat_native_p99] _ < <("$BENCH" latency --db "$DB_URL" --brokers "$BROKERS" --topic "$TOPIC" --rate "$RATE" --seconds "$DURATION")
stop "$PEER_PID"; PEER_PID=""

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
STAMP="$(date +%Y-%m-%d-%H%M)"
RESULTS="$ROOT/loadtest/results/kafka-$STAMP.md"
COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
mkdir -p "$ROOT/loadtest/results"
{
    echo "# Kafka bridge — $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- \`EVENTS=$EVENTS RATE=$RATE DURATION=$DURATION bash loadtest/kafka.sh\`; bv-kafka-bridge at $COMMIT (release); broker tansu 0.6.0 (memory storage) on this machine ($(nproc) cores, shared by broker, PostgreSQL, bridge and driver)."
    echo "- Native peer: \`kafka-bench out-native\` / \`in-native\`, the same records, statements and client settings without the bridge's subscription row, lock, LISTEN and metrics."
    echo
    echo "| path | bridge | native peer | bridge ÷ native |"
    echo "|---|---:|---:|---:|"
    echo "| out: outbox → Kafka, events/s | ${R[out_bridge]} | ${R[out_native]} | $(ratio "${R[out_bridge]}" "${R[out_native]}") |"
    echo "| in: Kafka → outbox, events/s | ${R[in_bridge]} | ${R[in_native]} | $(ratio "${R[in_bridge]}" "${R[in_native]}") |"
    echo "| out at $RATE/s: commit → on the topic, p50 ms | ${R[lat_bridge_p50]} | ${R[lat_native_p50]} | — |"
    echo "| out at $RATE/s: commit → on the topic, p99 ms | ${R[lat_bridge_p99]} | ${R[lat_native_p99]} | — |"
} >"$RESULTS"
echo
cat "$RESULTS"
echo
echo "Written to ${RESULTS#"$ROOT"/}"
