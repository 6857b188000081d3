#!/usr/bin/env bash
# Brings the whole platform up on local defaults: starts the services, builds
# `bv` and every component, and runs `bv up` on spin.toml (Ctrl-C stops it;
# when bv dies of a signal, infra/scripts/supervise.sh starts it again).
# Extra arguments go to `bv up` (e.g. --listen 0.0.0.0:3000).
#
# KAFKA=1 also runs the Kafka bridge (spin.toml's
# [application.tool.kafka-bridge], docs/KAFKA.md) beside it: against
# BV_KAFKA_BROKERS when set, otherwise against a local broker on
# 127.0.0.1:9092, started here if nothing listens there
# (infra/scripts/kafka-broker.sh; it keeps its data in memory).
set -euo pipefail
source "$(dirname "$0")/env.sh"

bash infra/scripts/services.sh
# The platform database (spin.toml's `db_url` default); migrations run in the
# components on first use, the event log is created by `bv`.
if ! psql -h 127.0.0.1 -U postgres -d postgres -Atc "SELECT 1 FROM pg_database WHERE datname = 'bitvelocity'" | grep -q 1; then
  say "creating database bitvelocity"
  psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE bitvelocity"
fi
# The auth component's keys (spin.toml's auth_signing_keys, a secret, and
# auth_public_keys). A deployment passes its own from its secret store; for
# a development machine one Ed25519 key is made once and kept, readable by
# its owner only, in .spin/dev-auth-keys.env, so tokens survive restarts.
if [ -z "${SPIN_VARIABLE_AUTH_SIGNING_KEYS:-}${SPIN_VARIABLE_AUTH_PUBLIC_KEYS:-}" ]; then
  keys=.spin/dev-auth-keys.env
  if [ ! -f "$keys" ]; then
    say "making a development signing key for the auth component ($keys)"
    b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
    mkdir -p .spin
    pem="$(mktemp)"
    openssl genpkey -algorithm ed25519 -out "$pem" 2>/dev/null
    # PKCS#8 and SPKI DER end with the 32-byte seed and public key.
    seed="$(openssl pkey -in "$pem" -outform DER | tail -c 32 | b64url)"
    x="$(openssl pkey -in "$pem" -pubout -outform DER | tail -c 32 | b64url)"
    rm -f "$pem"
    kid="dev-$(date -u +%Y%m%d%H%M%S)"
    (
      umask 077
      {
        printf "export SPIN_VARIABLE_AUTH_SIGNING_KEYS='%s'\n" "[{\"kid\":\"$kid\",\"seed\":\"$seed\"}]"
        printf "export SPIN_VARIABLE_AUTH_PUBLIC_KEYS='%s'\n" "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"$kid\",\"x\":\"$x\",\"alg\":\"EdDSA\",\"use\":\"sig\"}]}"
      } >"$keys.tmp"
    )
    mv "$keys.tmp" "$keys"
  fi
  # shellcheck source=/dev/null
  source "$keys"
fi
# bv's admin token: it switches on the fault-injection endpoints (/faults on
# the admin address, 127.0.0.1 only) that the game days use
# (`bv chaos run`, loadtest/gameday.sh). Made once, readable by its owner
# only, in .spin/dev-admin-token; a deployment passes its own secret.
if [ -z "${BV_ADMIN_TOKEN:-}" ]; then
  token_file=.spin/dev-admin-token
  if [ ! -f "$token_file" ]; then
    mkdir -p .spin
    (umask 077; openssl rand -hex 24 >"$token_file.tmp")
    mv "$token_file.tmp" "$token_file"
  fi
  BV_ADMIN_TOKEN="$(cat "$token_file")"
  export BV_ADMIN_TOKEN
fi
say "building bv (release)"
cargo build --release -p bv
say "building components"
"$BV" build
# bv runs under a supervisor that starts it again when it is killed (kill
# -9, the OOM killer), as Kubernetes would; .spin/bv.pid holds its pid.
mkdir -p .spin
supervised=(bash infra/scripts/supervise.sh .spin/bv.pid "$BV" up)
if [ "${KAFKA:-0}" != 1 ]; then
  exec "${supervised[@]}" "$@"
fi

say "building the Kafka bridge (release)"
cargo build --release -p bv-kafka-bridge
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
if [ -z "${BV_KAFKA_BROKERS:-}" ]; then
  export BV_KAFKA_BROKERS=127.0.0.1:9092
  if ! (exec 3<>/dev/tcp/127.0.0.1/9092) 2>/dev/null; then
    say "starting a local Kafka-protocol broker on 127.0.0.1:9092 (memory storage)"
    mkdir -p .spin
    bash infra/scripts/kafka-broker.sh run 9092 >.spin/kafka-broker.log 2>&1 &
    pids+=($!)
    for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/9092) 2>/dev/null && break; sleep 0.1; done
  fi
fi
say "starting the Kafka bridge against $BV_KAFKA_BROKERS (metrics on http://127.0.0.1:9410/metrics)"
"$CARGO_TARGET_DIR/release/bv-kafka-bridge" --from spin.toml &
pids+=($!)
"${supervised[@]}" "$@"
