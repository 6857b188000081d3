#!/usr/bin/env bash
# Keeps a command running as a Kubernetes Deployment or a systemd unit with
# Restart=on-abnormal would: when it dies of a signal (kill -9, the OOM
# killer, a crash) it is started again; when it exits by itself (done, or
# refused its configuration) or is stopped on purpose, the supervisor ends
# with its status.
#
#   bash infra/scripts/supervise.sh PIDFILE COMMAND [ARGS...]
#
# PIDFILE always holds the running command's pid (`kill -9 "$(cat PIDFILE)"`
# is how the bv-crash game day kills bv). SIGINT and SIGTERM sent to the
# supervisor (Ctrl-C, `kill`) are passed on to the command once, which then
# drains and stops. The command runs in a process group of its own, so a
# signal to the supervisor's group reaches it only through the supervisor.
# A command that dies again within 10 s of starting waits longer before each
# new start (1 s, doubling to 30 s).
set -uo pipefail
if [ $# -lt 2 ]; then
  echo "usage: supervise.sh PIDFILE COMMAND [ARGS...]" >&2
  exit 2
fi
pidfile=$1
shift
child=0
stopping=0

stop() {
  stopping=1
  if [ "$child" -ne 0 ]; then kill -"$1" "$child" 2>/dev/null || true; fi
}
trap 'stop INT' INT
trap 'stop TERM' TERM

delay=1
set -m
while :; do
  started=$SECONDS
  "$@" &
  child=$!
  echo "$child" >"$pidfile"
  # `wait` returns early when a trapped signal arrives; wait again until the
  # command itself has ended.
  while :; do
    wait "$child"
    status=$?
    kill -0 "$child" 2>/dev/null || break
  done
  child=0
  if [ "$stopping" = 1 ] || [ "$status" -le 128 ]; then
    rm -f "$pidfile"
    exit "$status"
  fi
  signal=$(kill -l "$((status - 128))" 2>/dev/null || echo "$((status - 128))")
  if [ $((SECONDS - started)) -ge 10 ]; then delay=1; fi
  echo "supervise.sh: $1 died of SIG$signal; starting it again in ${delay}s" >&2
  sleep "$delay" &
  wait $! || true
  [ "$stopping" = 1 ] && { rm -f "$pidfile"; exit "$status"; }
  delay=$((delay * 2 > 30 ? 30 : delay * 2))
done
