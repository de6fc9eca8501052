#!/usr/bin/env bash
# Creates the topics loms needs, if missing. Run by the compose file's `kafka-init` service and by
# the local stack (deploy/local/stack.sh), so both start from the same topology.
#
#   KAFKA_BOOTSTRAP      broker address (default 127.0.0.1:9092)
#   KAFKA_TOPICS_CMD     the kafka-topics command (default: kafka-topics.sh on PATH,
#                        or /opt/kafka/bin/kafka-topics.sh as in the apache/kafka image)
#   ORDER_EVENTS_TOPIC   default loms.order-events, 2 partitions
#   DLQ_TOPIC            default loms.order-events.dlq, 1 partition
#   REPLICATION_FACTOR   default 1 (3 on a three-node cluster)
#   MIN_INSYNC_REPLICAS  default 1 (2 on a three-node cluster): with acks=all, a write is
#                        refused unless this many replicas have it
#   INIT_WAIT_SECONDS    how long to wait for the broker (default 120)
#   KAFKA_COMMAND_CONFIG a client properties file for the tool (SASL_SSL: security.protocol,
#                        sasl.mechanism, sasl.jaas.config, the truststore); none in plaintext
#
# Idempotent: an existing topic is kept; one with another partition count or replication
# factor is an error.
set -euo pipefail

bootstrap=${KAFKA_BOOTSTRAP:-127.0.0.1:9092}
if [ -n "${KAFKA_TOPICS_CMD:-}" ]; then
  read -r -a topics_cmd <<<"$KAFKA_TOPICS_CMD"
elif command -v kafka-topics.sh >/dev/null; then
  topics_cmd=(kafka-topics.sh)
else
  topics_cmd=(/opt/kafka/bin/kafka-topics.sh)
fi

command_config=()
if [ -n "${KAFKA_COMMAND_CONFIG:-}" ]; then command_config=(--command-config "$KAFKA_COMMAND_CONFIG"); fi

topics() { "${topics_cmd[@]}" --bootstrap-server "$bootstrap" "${command_config[@]}" "$@"; }

deadline=$((SECONDS + ${INIT_WAIT_SECONDS:-120}))
until topics --list >/dev/null 2>&1; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "kafka-init: broker $bootstrap did not answer a metadata request in time" >&2
    topics --list >&2 || true
    exit 1
  fi
  sleep 1
done

replication=${REPLICATION_FACTOR:-1}
min_isr=${MIN_INSYNC_REPLICAS:-1}

ensure_topic() {
  local name=$1 partitions=$2 described found rf
  # Every node must have registered before a replicated topic can be placed: retry until then.
  until topics --create --if-not-exists --topic "$name" --partitions "$partitions" \
    --replication-factor "$replication" --config "min.insync.replicas=$min_isr" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "kafka-init: topic $name could not be created with replication factor $replication" >&2
      topics --create --if-not-exists --topic "$name" --partitions "$partitions" \
        --replication-factor "$replication" --config "min.insync.replicas=$min_isr" >&2 || true
      exit 1
    fi
    sleep 1
  done
  described=$(topics --describe --topic "$name")
  found=$(sed -n 's/.*PartitionCount:[[:space:]]*\([0-9]*\).*/\1/p' <<<"$described" | head -n1)
  rf=$(sed -n 's/.*ReplicationFactor:[[:space:]]*\([0-9]*\).*/\1/p' <<<"$described" | head -n1)
  if [ "$found" != "$partitions" ]; then
    echo "kafka-init: topic $name has ${found:-no} partitions, expected $partitions" >&2
    exit 1
  fi
  if [ "$rf" != "$replication" ]; then
    echo "kafka-init: topic $name has replication factor ${rf:-unknown}, expected $replication" >&2
    exit 1
  fi
  echo "kafka-init: topic $name ready ($partitions partitions, replication factor $replication, min.insync.replicas $min_isr)"
}

ensure_topic "${ORDER_EVENTS_TOPIC:-loms.order-events}" 2
ensure_topic "${DLQ_TOPIC:-loms.order-events.dlq}" 1
