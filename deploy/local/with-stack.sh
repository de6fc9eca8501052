#!/usr/bin/env bash
# Runs a command against a local stack: the one named by DATABASE_URL and KAFKA_BROKERS if both
# are set, otherwise a fresh stack on free ports in a temporary folder, stopped afterwards even
# when the command fails. The command sees DATABASE_URL, KAFKA_BROKERS and STACK_DIR (tests use
# STACK_DIR with stack.sh to stop and start the broker or the database). KAFKA_NODES=3 makes the
# fresh stack's Kafka a three-node cluster; PG_STANDBY=1 gives its PostgreSQL a synchronous standby.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if [ -n "${DATABASE_URL:-}" ] && [ -n "${KAFKA_BROKERS:-}" ]; then
  exec "$@"
fi

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
STACK_DIR=$(mktemp -d /tmp/loms-stack.XXXXXX)
PG_PORT=$(free_port)
KAFKA_PORT=$(free_port)
KAFKA_CONTROLLER_PORT=$(free_port)
export STACK_DIR PG_PORT KAFKA_PORT KAFKA_CONTROLLER_PORT
# Two broker listeners for proxies of their own (chaos's kafka_path_blackhole), one node only.
# Given to `stack.sh up` alone, which remembers them: exported, they would reach a stack started
# inside the command's run (run.sh's, a scenario's), whose broker would then take these ports.
proxied=""
if [ "${KAFKA_NODES:-1}" = 1 ]; then
  proxied=$(free_port):$(free_port),$(free_port):$(free_port)
fi
if [ "${PG_STANDBY:-0}" = 1 ]; then
  PG_STANDBY_PORT=$(free_port)
  export PG_STANDBY_PORT
fi
if [ "${KAFKA_NODES:-1}" = 3 ]; then
  KAFKA_PORTS=$KAFKA_PORT,$(free_port),$(free_port)
  KAFKA_CONTROLLER_PORTS=$KAFKA_CONTROLLER_PORT,$(free_port),$(free_port)
  # Three JVMs share the machine with everything else.
  KAFKA_HEAP=${KAFKA_HEAP:-512m}
  export KAFKA_PORTS KAFKA_CONTROLLER_PORTS KAFKA_HEAP
fi
chmod 755 "$STACK_DIR"

cleanup() {
  "$here/stack.sh" down || true
  if [ -z "${KEEP_STACK_DIR:-}" ]; then rm -rf "$STACK_DIR"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

KAFKA_PROXIED_PORTS=$proxied "$here/stack.sh" up
set -a
eval "$("$here/stack.sh" env)"
set +a
status=0
"$@" || status=$?
exit $status
