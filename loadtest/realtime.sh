#!/usr/bin/env bash
# Real-time benchmark — a benchmark, not a test.
#
#   bash loadtest/realtime.sh
#
# Two servers, one after the other, under the same driver
# (`realtime-bench load`):
#   native  `realtime-bench native-server`: tokio-tungstenite WebSockets and
#           a hyper Server-Sent Events stream, with bv's per-connection
#           design (reader, writer behind a queue of 256, 4 KiB read buffer)
#   bv      bv up on loadtest/realtime-bench/spin.toml: the ws-probe
#           component behind bv's WebSocket bridge (every message a
#           component call; a group send goes through
#           http://bv-websocket.spin.internal) and the stream-probe
#           component's event stream
# The driver holds $WS WebSocket connections ($ROOM of them in one room),
# reads the server's resident memory before and after, sends $MESSAGES
# messages to the room (each waits until every member has it; the first 3
# warm up) and times each delivery from the send; then holds $SSE event
# streams and reads the memory again. Prints the table and writes it to
# loadtest/results/realtime-<date>.md.
#
# Environment:
#   WS=10000  SSE=10000  ROOM=1000  MESSAGES=50  OPENING=200 (connections opened at once)
#   CARGO_TARGET_DIR  default $HOME/.cache/bitvelocity/target
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

WS="${WS:-10000}"
SSE="${SSE:-10000}"
ROOM="${ROOM:-1000}"
MESSAGES="${MESSAGES:-50}"
OPENING="${OPENING:-200}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bitvelocity/target}"
BV="$CARGO_TARGET_DIR/release/bv"
BENCH="$CARGO_TARGET_DIR/release/realtime-bench"
APP_DIR="$ROOT/loadtest/realtime-bench"
WORK="$(mktemp -d -t bv-realtime.XXXXXX)"
PIDS=()

log() { printf '%s\n' "$*" >&2; }

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
trap 'stop_all; rm -rf "$WORK"' EXIT
trap 'log "interrupted"; exit 130' INT TERM

# The driver and the server each hold one descriptor per connection (the
# WebSockets are closed before the streams are opened).
MOST=$(( WS > SSE ? WS : SSE ))
NEED=$(( MOST + 1024 ))
ulimit -n "$NEED" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if (( $(ulimit -n) < NEED )); then
    log "a process may open $(ulimit -n) files here; $MOST connections need $NEED (lower WS/SSE or raise the hard limit)"
    exit 1
fi

log "== building (release, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
cargo build --release -p bv -p realtime-bench
env -u CARGO_TARGET_DIR "$BV" build --from "$APP_DIR/spin.toml"

free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 12000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
    done
    return 1
}

# start NAME LOGFILE COMMAND... — runs COMMAND in the background.
start() {
    local name="$1" logfile="$2"; shift 2
    log "== $name: $*"
    env -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE "$@" >"$logfile" 2>&1 &
    PIDS+=("$!")
}

wait_port() { # NAME LOGFILE PID PORT
    for _ in $(seq 1 600); do
        if ! kill -0 "$3" 2>/dev/null; then log "$1 exited:"; cat "$2" >&2; exit 1; fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$4") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    log "$1 did not come up:"; cat "$2" >&2; exit 1
}

load() { # LABEL PORT PID
    "$BENCH" load --addr "127.0.0.1:$2" --pid "$3" --ws "$WS" --sse "$SSE" --room "$ROOM" \
        --messages "$MESSAGES" --opening "$OPENING" --out "$WORK/$1.txt"
}

LOADAVG="$(cut -d' ' -f1-3 /proc/loadavg)"

port="$(free_port)"
start "native server" "$WORK/native.log" "$BENCH" native-server --listen "127.0.0.1:$port"
wait_port "native server" "$WORK/native.log" "${PIDS[-1]}" "$port"
load native "$port" "${PIDS[-1]}"
stop_all

port="$(free_port)"; admin="$(free_port)"
start "bv" "$WORK/bv.log" env RUST_LOG="${RUST_LOG:-warn}" "$BV" up --from "$APP_DIR/spin.toml" \
    --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
    --state-dir "$WORK/state" --cache-dir "$HOME/.cache/bitvelocity/loadtest-bv-cache"
wait_port "bv" "$WORK/bv.log" "${PIDS[-1]}" "$port"
load bv "$port" "${PIDS[-1]}"
stop_all

get() { awk -v k="$2" '$1 == k { print $2; exit }' "$WORK/$1.txt"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "—"; else printf "%.2f×", a / b }'; }

STAMP="$(date +%Y-%m-%d-%H%M)"
RESULTS="$ROOT/loadtest/results/realtime-$STAMP.md"
COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
[[ -n "$(git -C "$ROOT" status --porcelain -- triggers components shared 2>/dev/null)" ]] && COMMIT="$COMMIT (uncommitted changes)"
mkdir -p "$ROOT/loadtest/results"
{
    echo "# Real time — $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- Machine: $(nproc) cores ($(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)); the driver and the server share it; load average before the runs: $LOADAVG."
    echo "- Held: $WS WebSocket connections, then $SSE Server-Sent Events streams (opened $OPENING at a time); memory is the server's resident set (VmRSS) after, less before, per 1,000 connections."
    echo "- Fan-out: $ROOM of the WebSocket connections in one room; $MESSAGES messages sent to it one after the other from a connection outside it (the first 3 not counted); latency from the send to each member's receipt, all members' receipts pooled."
    echo "- native: \`realtime-bench native-server\` (tokio-tungstenite, hyper). bv: ws-probe behind bv's WebSocket bridge (a component call per message; the group send is a chained request to bv-websocket.spin.internal), stream-probe's event stream; instance policy reuse."
    echo "- Command: \`WS=$WS SSE=$SSE ROOM=$ROOM MESSAGES=$MESSAGES bash loadtest/realtime.sh\`; bv at $COMMIT, release build."
    echo
    echo "| | native | bv | bv / native |"
    echo "|---|---:|---:|---:|"
    row() { # TITLE KEY
        local n b
        n="$(get native "$2")"; b="$(get bv "$2")"
        printf '| %s | %s | %s | %s |\n' "$1" "$n" "$b" "$(ratio "$b" "$n")"
    }
    row "WebSocket connections held" ws_connections
    row "seconds to open them" ws_open_s
    row "RSS per 1,000 WebSocket connections (KiB)" ws_rss_kib_per_1000
    row "SSE streams held" sse_connections
    row "seconds to open them" sse_open_s
    row "RSS per 1,000 SSE streams (KiB)" sse_rss_kib_per_1000
    row "fan-out to $ROOM members, p50 (ms)" fanout_p50_ms
    row "fan-out to $ROOM members, p99 (ms)" fanout_p99_ms
    row "fan-out to $ROOM members, max (ms)" fanout_max_ms
} >"$RESULTS"
echo
cat "$RESULTS"
echo
echo "Written to ${RESULTS#"$ROOT"/}"
