#!/usr/bin/env bash
# Instructions per request for the trivial component — a benchmark, not a test.
#
#   bash loadtest/http-instructions.sh
#
# Requests per second move with whatever else the machine is doing; the
# number of instructions a server executes per request does not. Each peer
# of loadtest/http-hello.sh (native hyper, bv reuse, bv strict, `wasmtime
# serve`, `wasmtime serve --max-instance-reuse-count 1`, and `wasmtime serve`
# with the client sending the `spin-*` headers bv sets, so that its guest
# does what it does under bv) runs under
# `valgrind --tool=callgrind` with instrumentation off; after start-up and
# $WARM warm-up requests it is switched on, $REQUESTS requests are
# sent (one curl process, one at a time), it is switched off and the server's
# instruction count (every thread) is divided by the requests it answered.
# Start-up, compilation and the warm-up are not counted. bv reuse is also
# measured with tracing on: every request a span, exported over OTLP
# (http/protobuf, batch) to `commerce-bench otlp-sink` outside valgrind,
# once with the default sampler (every trace) and once with 10 % of the
# traces sampled (OTEL_TRACES_SAMPLER=parentbased_traceidratio). The exporter's
# thread is counted: it is part of what tracing costs. bv runs with a pool
# of 3 instance slots (BV_POOL_INSTANCES), as valgrind cannot reserve the
# address space of the default 1000; instantiation from a pool slot costs
# the same either way. Writes
# loadtest/results/http-instructions-<date>.md.
#
# Environment:
#   REQUESTS=2000  requests counted per peer    WARM=200  requests before counting
#   CARGO_TARGET_DIR  default $HOME/.cache/bitvelocity/target
#   BV_BIN  measure this bv binary instead of the one built here (e.g. an
#           earlier commit's, to compare two builds instruction for instruction)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

REQUESTS="${REQUESTS:-2000}"
WARM="${WARM:-200}"
[[ "$REQUESTS" =~ ^[1-9][0-9]*$ ]] || { echo "REQUESTS must be a positive integer, not '$REQUESTS'" >&2; exit 1; }
[[ "$WARM" =~ ^[0-9]+$ ]] || { echo "WARM must be a non-negative integer, not '$WARM'" >&2; exit 1; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bitvelocity/target}"
BV="${BV_BIN:-$CARGO_TARGET_DIR/release/bv}"
if [[ -n "${BV_BIN:-}" && ! -x "$BV_BIN" ]]; then
    echo "BV_BIN=$BV_BIN is not an executable" >&2
    exit 1
fi
NATIVE="$CARGO_TARGET_DIR/release/native-hello"
APP="$ROOT/loadtest/http-hello/spin.toml"
WASM="$ROOT/components/target/wasm32-wasip2/release/hello.wasm"
WORK="$(mktemp -d -t bv-instructions.XXXXXX)"
SERVER_PID=""

log() { printf '%s\n' "$*" >&2; }

stop_server() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 300); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
SINK_PID=""
trap 'stop_server; [[ -n "$SINK_PID" ]] && kill "$SINK_PID" 2>/dev/null; rm -rf "$WORK"' EXIT
trap 'log "interrupted"; exit 130' INT

# ---------------------------------------------------------------- prerequisites
need_apt=()
command -v valgrind >/dev/null || need_apt+=(valgrind)
if ((${#need_apt[@]})); then
    log "installing ${need_apt[*]} with apt-get"
    SUDO=""
    [[ "$(id -u)" != 0 ]] && SUDO="sudo"
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
    $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${need_apt[@]}"
fi
WASMTIME="$(bash "$ROOT/loadtest/wasmtime.sh")"
log "== building (release, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
cargo build --release -p bv -p native-hello -p commerce-bench
SINK="$CARGO_TARGET_DIR/release/commerce-bench"
env -u CARGO_TARGET_DIR "$BV" build --from "$APP"
[[ -f "$WASM" ]] || { log "no component at $WASM after bv build"; exit 1; }

free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
    done
    return 1
}

# requests URL CONNECTIONS COUNT: exactly COUNT requests from one curl
# process, CONNECTIONS at a time over kept-alive connections; fails unless
# every answer is a 200.
requests() {
    local url="$1" conns="$2" count="$3"
    [[ "$count" -gt 0 ]] || return 0
    {
        for h in "${REQUEST_HEADERS[@]}"; do printf 'header = "%s"\n' "$h"; done
        yes "url = \"$url\"
output = \"/dev/null\"" | head -n $((count * 2))
    } >"$WORK/curl.cfg"
    curl -s --no-progress-meter --parallel --parallel-max "$conns" --max-time 60 -w '%{http_code}\n' \
        -K "$WORK/curl.cfg" >"$WORK/codes.txt" || true
    local ok
    ok="$(grep -c '^200$' "$WORK/codes.txt" || true)"
    if [[ "$ok" != "$count" ]]; then
        log "$ok of $count requests answered 200; the others: $(grep -v '^200$' "$WORK/codes.txt" | sort | uniq -c | tr '\n' ' ')"
        return 1
    fi
}

NAMES=(); PER_REQUEST=(); COUNTED=()
# Headers every request carries besides curl's own (none but for one peer).
REQUEST_HEADERS=()

# measure NAME URL -- [VAR=value...] COMMAND...: the variables are set for
# valgrind itself (a program it execs would run uninstrumented).
measure() {
    local name="$1" url="$2"; shift 3
    local vars=()
    while [[ "${1:-}" =~ ^[A-Z_]+= ]]; do vars+=("$1"); shift; done
    local i="${#NAMES[@]}"
    local out="$WORK/callgrind-$i.out" logfile="$WORK/server-$i.log"
    log "== $name: ${vars[*]} $*"
    env -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE "${vars[@]}" \
        valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" \
        "$@" >"$logfile" 2>&1 &
    SERVER_PID=$!
    local ok=""
    for _ in $(seq 1 1800); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then log "$name exited:"; tail -30 "$logfile" >&2; exit 1; fi
        if curl -sf --max-time 10 "$url" >/dev/null 2>&1; then ok=1; break; fi
        sleep 0.2
    done
    [[ -n "$ok" ]] || { log "$name never answered"; tail -30 "$logfile" >&2; exit 1; }
    requests "$url" 1 "$WARM" || exit 1
    callgrind_control -i on "$SERVER_PID" >/dev/null
    requests "$url" 1 "$REQUESTS" || exit 1
    local answered="$REQUESTS"
    callgrind_control -i off "$SERVER_PID" >/dev/null
    stop_server
    local total
    total="$(awk '/^totals:/ { print $2; exit }' "$out")"
    [[ -n "$total" && -n "$answered" && "$answered" -gt 0 ]] ||
        { log "no instruction count for $name"; tail -30 "$logfile" >&2; exit 1; }
    NAMES+=("$name"); COUNTED+=("$answered")
    PER_REQUEST+=("$(awk -v t="$total" -v n="$answered" 'BEGIN { printf "%.0f", t / n }')")
    log "   $answered requests, ${PER_REQUEST[-1]} instructions per request"
}

CACHE="$HOME/.cache/bitvelocity/loadtest-bv-cache"
mkdir -p "$WORK/state" "$CACHE"
# valgrind gives a process well under 64 GiB of address space: a pool of a
# few slots (each memory slot reserves about 4 GiB) fits, bv's 1000 do not.
POOL=3

port="$(free_port)"
measure "native (hyper)" "http://127.0.0.1:$port/hello/" -- "$NATIVE" --listen "127.0.0.1:$port"
for policy in reuse strict; do
    port="$(free_port)"; admin="$(free_port)"
    measure "bv $policy" "http://127.0.0.1:$port/hello/" -- \
        RUST_LOG=warn BV_POOL_INSTANCES="$POOL" "$BV" up --from "$APP" --listen "127.0.0.1:$port" \
        --admin-listen "127.0.0.1:$admin" --instance-policy "$policy" \
        --state-dir "$WORK/state" --cache-dir "$CACHE" --log-format text
done
sink_port="$(free_port)"
"$SINK" otlp-sink --listen "127.0.0.1:$sink_port" >"$WORK/sink.log" 2>&1 &
SINK_PID=$!
for sampling in "every trace" "10 % of traces"; do
    sampler=(OTEL_TRACES_SAMPLER=parentbased_always_on)
    [[ "$sampling" == "10 % of traces" ]] &&
        sampler=(OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.1)
    port="$(free_port)"; admin="$(free_port)"
    measure "bv reuse, tracing on ($sampling)" "http://127.0.0.1:$port/hello/" -- \
        RUST_LOG=warn BV_POOL_INSTANCES="$POOL" OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$sink_port" \
        OTEL_SERVICE_NAME=bv-bench "${sampler[@]}" "$BV" up --from "$APP" --listen "127.0.0.1:$port" \
        --admin-listen "127.0.0.1:$admin" --instance-policy reuse \
        --state-dir "$WORK/state" --cache-dir "$CACHE" --log-format text
done
port="$(free_port)"
measure "wasmtime serve" "http://127.0.0.1:$port/hello/" -- \
    "$WASMTIME" serve -Sp3,cli -Wcomponent-model-async --addr "127.0.0.1:$port" "$WASM"
# The same guest work as under bv: `wasmtime serve` sets no `spin-*`
# headers, so here the client sends the seven bv sets on this route (same
# names, values of the same length), which the guest then receives and
# copies as it does under bv. The difference to bv reuse is what bv itself
# adds; the difference to plain `wasmtime serve` is what Spin's headers cost.
port="$(free_port)"
REQUEST_HEADERS=(
    "spin-full-url: http://127.0.0.1:$port/hello/"
    "spin-path-info: /"
    "spin-matched-route: /hello/..."
    "spin-component-route: /hello"
    "spin-raw-component-route: /hello/..."
    "spin-base-path: /"
    "spin-client-addr: 127.0.0.1:$port"
)
measure "wasmtime serve, given Spin's headers" "http://127.0.0.1:$port/hello/" -- \
    "$WASMTIME" serve -Sp3,cli -Wcomponent-model-async --addr "127.0.0.1:$port" "$WASM"
REQUEST_HEADERS=()
port="$(free_port)"
measure "wasmtime serve, reuse 1" "http://127.0.0.1:$port/hello/" -- \
    "$WASMTIME" serve -Sp3,cli -Wcomponent-model-async --max-instance-reuse-count 1 \
    --addr "127.0.0.1:$port" "$WASM"

# ---------------------------------------------------------------- report
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
STAMP="$(date +%Y-%m-%d-%H%M)"
RESULTS="$ROOT/loadtest/results/http-instructions-$STAMP.md"
# Two runs within one minute (an A/B with BV_BIN) keep both reports.
[[ -e "$RESULTS" ]] && RESULTS="${RESULTS%.md}-$(date +%S).md"
COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
[[ -n "$(git -C "$ROOT" status --porcelain -- triggers 2>/dev/null)" ]] && COMMIT="$COMMIT (triggers/ has uncommitted changes)"
[[ -n "${BV_BIN:-}" ]] && COMMIT="the binary $BV_BIN (BV_BIN; this checkout is at $COMMIT)"
mkdir -p "$ROOT/loadtest/results"
{
    echo "# HTTP: instructions per request, trivial component — $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- Each server under \`valgrind --tool=callgrind\`, counting only while $REQUESTS requests are answered (one curl process, one at a time over a kept-alive connection), after $WARM warm-up requests. All threads of the server; the client is not counted."
    echo "- Command: \`REQUESTS=$REQUESTS bash loadtest/http-instructions.sh\`; bv at $COMMIT, release build; $("$WASMTIME" --version)."
    echo "- Instruction counts do not depend on other load on the machine; they do not show waiting (locks, I/O), which req/s does."
    echo "- \`wasmtime serve, given Spin's headers\`: the client sends the seven \`spin-*\` headers bv sets on this route, so the guest does the work it does under bv. bv reuse ÷ this peer is what bv itself adds; this peer ÷ \`wasmtime serve\` is what Spin's headers cost. Its last column is it ÷ bv reuse."
    echo
    echo "| server | requests counted | instructions per request | ÷ native | ÷ wasmtime serve (same policy) | ÷ bv reuse, tracing off |"
    echo "|---|---:|---:|---:|---:|---:|"
    for i in "${!NAMES[@]}"; do
        peer="" off=""
        case "${NAMES[$i]}" in
            "bv reuse") peer="$(ratio "${PER_REQUEST[$i]}" "${PER_REQUEST[5]}")" ;;
            "bv strict") peer="$(ratio "${PER_REQUEST[$i]}" "${PER_REQUEST[7]}")" ;;
            "wasmtime serve, given Spin's headers") peer="$(ratio "${PER_REQUEST[$i]}" "${PER_REQUEST[5]}")"
                off="$(ratio "${PER_REQUEST[$i]}" "${PER_REQUEST[1]}")" ;;
            "bv reuse, tracing on"*) peer="$(ratio "${PER_REQUEST[$i]}" "${PER_REQUEST[5]}")"
                off="$(ratio "${PER_REQUEST[$i]}" "${PER_REQUEST[1]}")" ;;
        esac
        printf '| %s | %s | %s | %s | %s | %s |\n' "${NAMES[$i]}" "${COUNTED[$i]}" "${PER_REQUEST[$i]}" \
            "$(ratio "${PER_REQUEST[$i]}" "${PER_REQUEST[0]}")" "${peer:-—}" "${off:-—}"
    done
} >"$RESULTS"
echo
cat "$RESULTS"
echo
echo "Written to ${RESULTS#"$ROOT"/}"
