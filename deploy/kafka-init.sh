#!/usr/bin/env bash
# Creates the topics loms needs, if missing. Run by the compose file's `kafka-init` service and by
# the local stack (deploy/local/stack.sh), so both start from the same topology.
#
#   KAFKA_BOOTSTRAP      broker address (default 127.0.0.1:9092)
#   KAFKA_TOPICS_CMD     the kafka-topics command (default: kafka-topics.sh on PATH,
#                        or /opt/kafka/bin/kafka-topics.sh as in the apache/kafka image)
#   ORDER_EVENTS_TOPIC   default loms.order-events, 2 partitions
#   DLQ_TOPIC            default loms.order-events.dlq, 1 partition
#   INIT_WAIT_SECONDS    how long to wait for the broker (default 120)
#
# Idempotent: an existing topic is kept; one with another partition count is an error.
set -euo pipefail

bootstrap=${KAFKA_BOOTSTRAP:-127.0.0.1:9092}
if [ -n "${KAFKA_TOPICS_CMD:-}" ]; then
  read -r -a topics_cmd <<<"$KAFKA_TOPICS_CMD"
elif command -v kafka-topics.sh >/dev/null; then
  topics_cmd=(kafka-topics.sh)
else
  topics_cmd=(/opt/kafka/bin/kafka-topics.sh)
fi

topics() { "${topics_cmd[@]}" --bootstrap-server "$bootstrap" "$@"; }

deadline=$((SECONDS + ${INIT_WAIT_SECONDS:-120}))
until topics --list >/dev/null 2>&1; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "kafka-init: broker $bootstrap did not answer a metadata request in time" >&2
    topics --list >&2 || true
    exit 1
  fi
  sleep 1
done

ensure_topic() {
  local name=$1 partitions=$2 found
  topics --create --if-not-exists --topic "$name" --partitions "$partitions" \
    --replication-factor 1 >/dev/null
  found=$(topics --describe --topic "$name" | sed -n 's/.*PartitionCount:[[:space:]]*\([0-9]*\).*/\1/p' | head -n1)
  if [ "$found" != "$partitions" ]; then
    echo "kafka-init: topic $name has ${found:-no} partitions, expected $partitions" >&2
    exit 1
  fi
  echo "kafka-init: topic $name ready ($partitions partitions, replication factor 1)"
}

ensure_topic "${ORDER_EVENTS_TOPIC:-loms.order-events}" 2
ensure_topic "${DLQ_TOPIC:-loms.order-events.dlq}" 1
