#!/usr/bin/env bash
# HTTP benchmark of the trivial component (components/hello) — a benchmark, not a test.
#
#   bash loadtest/http-hello.sh
#
# Serves the same bytes ("Hello from BitVelocity\n", 200, text/plain) from:
#   native       loadtest/native-hello (plain hyper 1, multi-threaded tokio)
#   bv reuse     bv up --instance-policy reuse
#   bv strict    bv up --instance-policy strict (a fresh instance per request)
#   wasmtime     wasmtime serve -Sp3,cli -Wcomponent-model-async (default reuse)
#   wasmtime 1   the same with --max-instance-reuse-count 1
#                (wasmtime-cli 48 from crates.io, installed once into
#                $HOME/.cache/bitvelocity/wasmtime-48 when missing: see loadtest/wasmtime.sh)
# bv serves loadtest/http-hello/spin.toml: the hello component alone, so the
# run needs no variables, database or event subscriptions.
# and loads each the same way: 2 s warm-up, then wrk -t1 -c16 -d${DURATION}s --latency.
# Prints req/s, p50, p99 and the ratio to native; writes the table to
# loadtest/results/http-hello-<date>.md.
#
# Environment:
#   DURATION=8     seconds of each measured wrk run
#   WARMUP=2       seconds of the warm-up run (not measured)
#   PIN=1          pin wrk to CPU 0 and the server to CPU 1 (default: no pinning)
#   CARGO_TARGET_DIR  default $HOME/.cache/bitvelocity/target (keep it warm: a cold
#                  wasmtime build takes 10+ minutes on 2 cores)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DURATION="${DURATION:-8}"
WARMUP="${WARMUP:-2}"
THREADS=1
CONNECTIONS=16
PIN="${PIN:-0}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bitvelocity/target}"
BV="$CARGO_TARGET_DIR/release/bv"
NATIVE="$CARGO_TARGET_DIR/release/native-hello"
WASM="$ROOT/components/target/wasm32-wasip2/release/hello.wasm"
APP="$ROOT/loadtest/http-hello/spin.toml"
EXPECTED_BODY=$'Hello from BitVelocity\n'

WORK="$(mktemp -d -t bv-loadtest.XXXXXX)"
SERVER_PID=""

log() { printf '%s\n' "$*" >&2; }

stop_server() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}

cleanup() {
    stop_server
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- prerequisites
if ! command -v wrk >/dev/null; then
    log "wrk is missing: installing it with apt-get"
    SUDO=""
    [[ "$(id -u)" != 0 ]] && SUDO="sudo"
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
    $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq wrk
fi
command -v curl >/dev/null || { log "curl is required"; exit 1; }

WASMTIME="$(bash "$ROOT/loadtest/wasmtime.sh")"
log "== building (release, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
cargo build --release -p bv
cargo build --release -p native-hello
log "== building the hello component (bv build)"
env -u CARGO_TARGET_DIR "$BV" build --from "$APP"
[[ -f "$WASM" ]] || { log "no component at $WASM after bv build"; exit 1; }

# ---------------------------------------------------------------- helpers
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    log "no free port found"
    return 1
}

# wait_ready URL LOGFILE: until URL answers 200 with the expected body (60 s at most).
wait_ready() {
    local url="$1" logfile="$2" body
    for _ in $(seq 1 600); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            log "the server exited before answering; its log:"
            cat "$logfile" >&2
            return 1
        fi
        if body="$(curl -sf --max-time 2 "$url" 2>/dev/null)"; then
            # $(...) strips the trailing newline: compare without it.
            if [[ "$body" == "${EXPECTED_BODY%$'\n'}" ]]; then
                return 0
            fi
            log "unexpected body from $url: ${body@Q}"
            return 1
        fi
        sleep 0.1
    done
    log "$url did not answer within 60 s; server log:"
    cat "$logfile" >&2
    return 1
}

# to_us VALUE: wrk latency ("215.00us", "1.20ms", "1.02s") -> microseconds.
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) m = 1; else if (v ~ /ms$/) m = 1000;
        else if (v ~ /m$/) m = 60000000; else if (v ~ /s$/) m = 1000000; else m = 1
        printf "%.1f", n * m
    }'
}

fmt_ms() { awk -v us="$1" 'BEGIN { printf "%.3f ms", us / 1000 }'; }

# Histogram scraping: "le count" lines of bv_instantiation_duration_seconds (summed over
# components; there is one).
scrape_instantiation() {
    local admin_url="$1" out="$2"
    curl -sf --max-time 5 "$admin_url/metrics" \
        | awk '/^bv_instantiation_duration_seconds_bucket\{/ {
                 match($0, /le="[^"]*"/); le = substr($0, RSTART + 4, RLENGTH - 5)
                 c[le] += $NF; if (!(le in seen)) { seen[le] = 1; order[++n] = le }
               }
               END { for (i = 1; i <= n; i++) print order[i], c[order[i]] }' >"$out" || true
}

# median_from_buckets BEFORE AFTER: median of the observations made between two scrapes,
# by linear interpolation inside the bucket that holds it. Prints "us count" or "".
median_from_buckets() {
    awk '
        FNR == NR { before[$1] = $2; next }
        { le[++n] = $1; after[n] = $2 }
        END {
            if (n == 0) exit
            for (i = 1; i <= n; i++) cum[i] = after[i] - ((le[i] in before) ? before[le[i]] : 0)
            total = cum[n]
            if (total <= 0) { print "none", 0; exit }
            rank = total / 2; lo = 0; prev = 0
            for (i = 1; i <= n; i++) {
                if (cum[i] >= rank) {
                    if (le[i] == "+Inf") { print "inf", total; exit }
                    hi = le[i] + 0
                    est = (cum[i] == prev) ? hi : lo + (hi - lo) * (rank - prev) / (cum[i] - prev)
                    printf "%.1f %d\n", est * 1e6, total; exit
                }
                if (le[i] != "+Inf") lo = le[i] + 0
                prev = cum[i]
            }
        }' "$1" "$2"
}

# ---------------------------------------------------------------- one peer
NAMES=()
RPS=()
P50=()
P99=()
ERRS=()
INST_NOTES=()
IDLE=()

# cpu_idle: percentage of CPU time idle over the next second (other load on the machine
# skews every figure: check this before trusting a run).
cpu_idle() {
    local a b
    a="$(awk '/^cpu / { print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat)"
    sleep 1
    b="$(awk '/^cpu / { print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat)"
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ");
        t = y[2] - x[2]; printf "%.0f", (t > 0 ? 100 * (y[1] - x[1]) / t : 0) }'
}

# run_peer NAME URL ADMIN_URL -- COMMAND...
run_peer() {
    local name="$1" url="$2" admin_url="$3"
    shift 4
    local logfile="$WORK/server-${#NAMES[@]}.log" wrk_out="$WORK/wrk-${#NAMES[@]}.txt"
    local server_cmd=("$@") wrk_cmd=(wrk)
    if [[ "$PIN" == 1 ]]; then
        server_cmd=(taskset -c 1 "$@")
        wrk_cmd=(taskset -c 0 wrk)
    fi
    log "== $name: ${server_cmd[*]}"
    local idle
    idle="$(cpu_idle)"
    IDLE+=("$idle")
    log "   CPU idle in the second before start: $idle%"
    # RUST_BACKTRACE=1 in a developer's shell makes every error wasmtime creates
    # capture a backtrace (with strict instances: one per request, when the store is
    # dropped); servers run without it, as in production.
    env -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE "${server_cmd[@]}" >"$logfile" 2>&1 &
    SERVER_PID=$!
    wait_ready "$url" "$logfile"
    log "   warm-up ${WARMUP}s"
    "${wrk_cmd[@]}" -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" "$url" >/dev/null
    if [[ -n "$admin_url" ]]; then scrape_instantiation "$admin_url" "$WORK/inst-before"; fi
    log "   wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency $url"
    "${wrk_cmd[@]}" -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$url" >"$wrk_out"
    local note=""
    if [[ -n "$admin_url" ]]; then
        scrape_instantiation "$admin_url" "$WORK/inst-after"
        local med
        med="$(median_from_buckets "$WORK/inst-before" "$WORK/inst-after")"
        note="$med"
    fi
    stop_server

    local rps p50 p99 non2xx sockerr
    rps="$(awk '/^Requests\/sec:/ { print $2 }' "$wrk_out")"
    p50="$(awk '$1 == "50%" { print $2 }' "$wrk_out")"
    p99="$(awk '$1 == "99%" { print $2 }' "$wrk_out")"
    non2xx="$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$wrk_out")"
    sockerr="$(awk '/Socket errors:/ { sub(/.*Socket errors: */, ""); print }' "$wrk_out")"
    if [[ -z "$rps" || -z "$p50" || -z "$p99" ]]; then
        log "could not parse wrk's output for $name:"
        cat "$wrk_out" >&2
        exit 1
    fi
    local errs="0"
    [[ -n "$non2xx" ]] && errs="$non2xx non-2xx"
    [[ -n "$sockerr" ]] && errs="$errs; socket: $sockerr"
    NAMES+=("$name")
    RPS+=("$rps")
    P50+=("$(to_us "$p50")")
    P99+=("$(to_us "$p99")")
    ERRS+=("$errs")
    INST_NOTES+=("$note")
    log "   $rps req/s, p50 $p50, p99 $p99, errors: $errs"
}

# ---------------------------------------------------------------- the peers
STATE="$WORK/bv-state"
CACHE="$HOME/.cache/bitvelocity/loadtest-bv-cache"
mkdir -p "$STATE" "$CACHE"

port="$(free_port)"
run_peer "native (hyper)" "http://127.0.0.1:$port/hello/" "" -- \
    "$NATIVE" --listen "127.0.0.1:$port"

for policy in reuse strict; do
    port="$(free_port)"
    admin="$(free_port)"
    while [[ "$admin" == "$port" ]]; do admin="$(free_port)"; done
    run_peer "bv $policy" "http://127.0.0.1:$port/hello/" "http://127.0.0.1:$admin" -- \
        env RUST_LOG="${RUST_LOG:-info,wasmtime=warn,cranelift=warn}" \
        "$BV" up --from "$APP" --listen "127.0.0.1:$port" \
        --admin-listen "127.0.0.1:$admin" --instance-policy "$policy" \
        --state-dir "$STATE" --cache-dir "$CACHE"
done

WASMTIME_NOTE="$("$WASMTIME" --version)"
port="$(free_port)"
run_peer "wasmtime serve" "http://127.0.0.1:$port/hello/" "" -- \
    "$WASMTIME" serve -Sp3,cli -Wcomponent-model-async --addr "127.0.0.1:$port" "$WASM"
port="$(free_port)"
run_peer "wasmtime serve, reuse 1" "http://127.0.0.1:$port/hello/" "" -- \
    "$WASMTIME" serve -Sp3,cli -Wcomponent-model-async --max-instance-reuse-count 1 \
    --addr "127.0.0.1:$port" "$WASM"

# ---------------------------------------------------------------- report
CPU_MODEL="$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
MEM="$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git -C "$ROOT" status --porcelain -- triggers 2>/dev/null)" ]]; then
    COMMIT="$COMMIT (triggers/ has uncommitted changes)"
fi
STAMP="$(date +%Y-%m-%d-%H%M)"
RESULTS="$ROOT/loadtest/results/http-hello-$STAMP.md"
PIN_NOTE="not pinned: wrk and the server share both cores"
[[ "$PIN" == 1 ]] && PIN_NOTE="pinned: wrk on CPU 0, the server on CPU 1"

native_rps="${RPS[0]}"
{
    echo "# HTTP: trivial component — $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- Machine: $(nproc) cores ($CPU_MODEL), $MEM RAM, $(uname -sr)"
    echo "- Client and server share the machine ($PIN_NOTE)."
    echo "- Load: \`wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency\` after a ${WARMUP}s warm-up, same for every peer; one server at a time."
    envs="DURATION=$DURATION"
    [[ "$WARMUP" != 2 ]] && envs="$envs WARMUP=$WARMUP"
    [[ "$PIN" == 1 ]] && envs="$envs PIN=1"
    echo "- Command: \`$envs bash loadtest/http-hello.sh\`; bv at $COMMIT, release build."
    echo "- wasmtime: $WASMTIME_NOTE"
    echo "- Servers run with RUST_BACKTRACE and RUST_LIB_BACKTRACE unset (as in production); RUST_LOG for bv: \`${RUST_LOG:-info,wasmtime=warn,cranelift=warn}\`."
    idle_line="- CPU idle in the second before each peer started (other load skews the figures):"
    for i in "${!NAMES[@]}"; do idle_line="$idle_line ${NAMES[$i]} ${IDLE[$i]}%;"; done
    echo "${idle_line%;}."
    echo
    echo "| peer | req/s | p50 | p99 | ratio to native | errors |"
    echo "|---|---:|---:|---:|---:|---|"
    for i in "${!NAMES[@]}"; do
        ratio="$(awk -v a="${RPS[$i]}" -v b="$native_rps" 'BEGIN { printf "%.2f×", a / b }')"
        printf '| %s | %.0f | %s | %s | %s | %s |\n' "${NAMES[$i]}" "${RPS[$i]}" \
            "$(fmt_ms "${P50[$i]}")" "$(fmt_ms "${P99[$i]}")" "$ratio" "${ERRS[$i]}"
    done
    echo
    for i in "${!NAMES[@]}"; do
        note="${INST_NOTES[$i]}"
        [[ -z "$note" ]] && continue
        read -r med count <<<"$note"
        if [[ -z "${med:-}" || "$med" == none || "${count:-0}" == 0 ]]; then
            echo "- ${NAMES[$i]}: no instantiation during the measured run."
        elif [[ "$med" == inf ]]; then
            echo "- ${NAMES[$i]}: median instantiation above the last bucket (50 ms), $count instantiations in the measured run."
        else
            echo "- ${NAMES[$i]}: median instantiation ≈ ${med} µs over $count instantiations in the measured run (estimate: linear interpolation inside the bucket of \`bv_instantiation_duration_seconds\` holding the median)."
        fi
    done
    echo
    echo "Instantiation of the hello component without load (\`cargo bench -p bv-runtime --bench instantiation\`, 5000 samples):"
    echo
    echo '```'
    cargo bench -q -p bv-runtime --bench instantiation 2>/dev/null | grep -E "new_store|drop"
    echo '```'
} >"$RESULTS"

echo
cat "$RESULTS"
echo
echo "Written to ${RESULTS#"$ROOT"/}"
