#!/usr/bin/env bash
# Starts the local services BitVelocity uses (PostgreSQL, Redis, Mosquitto)
# if they are not answering. Idempotent; safe to run before every command.
set -euo pipefail

say() { printf '==> %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local name=$1 port=$2
  for _ in $(seq 1 100); do
    port_open "$port" && return 0
    sleep 0.1
  done
  echo "error: $name did not start on port $port" >&2
  return 1
}

if ! port_open 5432; then
  say "starting PostgreSQL"
  if command -v pg_ctlcluster >/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
  else
    echo "error: PostgreSQL is not running and pg_ctlcluster is not installed (apt-get install postgresql)" >&2
    exit 1
  fi
  wait_port PostgreSQL 5432
fi

if ! port_open 6379; then
  say "starting Redis"
  command -v redis-server >/dev/null || { echo "error: redis-server is not installed (apt-get install redis-server)" >&2; exit 1; }
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_port Redis 6379
fi

if ! port_open 1883; then
  say "starting Mosquitto"
  command -v mosquitto >/dev/null || { echo "error: mosquitto is not installed (apt-get install mosquitto)" >&2; exit 1; }
  mosquitto -d -c /etc/mosquitto/mosquitto.conf
  wait_port Mosquitto 1883
fi
