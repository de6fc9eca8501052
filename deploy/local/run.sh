#!/usr/bin/env bash
# The whole system as plain processes, in the foreground: the local stack (PostgreSQL, Kafka, the
# topics), loms, and three notifiers, their logs prefixed by name. Ctrl-C (or SIGTERM) stops the
# services gracefully and then the stack; a second Ctrl-C while stopping stops them at once.
#
#   LOMS_GRPC_ADDR / LOMS_HTTP_ADDR    default 0.0.0.0:8083 / 0.0.0.0:8084
#   LOMS_ADMIN_ADDR                    loms's metrics and probes, default 0.0.0.0:8085
#   NOTIFIERS_METRICS_ADDRS            the three notifiers' metrics and probes, default
#                                      "127.0.0.1:9101 127.0.0.1:9102 127.0.0.1:9103"
#   PROMETHEUS_ADDR                    when Debian's prometheus is installed (setup.sh installs
#                                      it), it is started there (default 127.0.0.1:9090),
#                                      scraping loms and the notifiers with the shipped alert
#                                      rules (deploy/prometheus/alerts.yml)
#   STACK_DIR, PG_PORT, KAFKA_PORT, KAFKA_CONTROLLER_PORT: as for stack.sh
#   BIN_DIR                            where loms and notifier are (default target/release)
#   KEEP_STACK=1                       leave PostgreSQL and Kafka running on exit
#   OTEL_EXPORTER_OTLP_ENDPOINT        where loms and the notifiers export their spans; when
#                                      unset and Jaeger is built (`make jaeger`, `make test`)
#                                      or on PATH, it is started (query API and UI on
#                                      http://localhost:16686)
#   JAEGER_OTLP_HTTP_ADDR, JAEGER_QUERY_ADDR, JAEGER_QUERY_GRPC_ADDR
#                                      that Jaeger's addresses (deploy/jaeger/config.yaml)
#
# A terminal's Ctrl-C reaches its whole foreground process group. So the services run in
# sessions of their own (setsid) and hear only this script, which stops them once, in order;
# the log prefixers ignore the signal and end when their service's output ends, so no service
# ever writes its last lines into a pipe nobody reads.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin=${BIN_DIR:-$here/../../target/release}

pids=()
stopping=
stop() {
  trap - EXIT
  stopping=1
  echo "run: stopping loms and the notifiers" >&2
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    # A second signal interrupts this wait; its trap stops the services at once.
    while kill -0 "$pid" 2>/dev/null; do wait "$pid" 2>/dev/null || true; done
  done
  if [ -z "${KEEP_STACK:-}" ]; then "$here/stack.sh" down; fi
  echo "run: stopped" >&2
}
on_signal() {
  if [ -n "$stopping" ]; then
    echo "run: second signal, killing loms and the notifiers" >&2
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    return
  fi
  stop
  exit 130
}
# Set before the stack starts, so that a stack that fails halfway is taken down too.
trap stop EXIT
trap on_signal INT TERM

"$here/stack.sh" up
eval "$("$here/stack.sh" env)"

prefixed() { # name, command...
  local name=$1; shift
  setsid "$@" > >(trap '' INT TERM; exec sed -u "s/^/$name | /") 2>&1 &
  pids+=($!)
}

if [ -z "${OTEL_EXPORTER_OTLP_ENDPOINT:-}" ]; then
  if jaeger=$("$here/jaeger.sh" --if-built) || jaeger=$(command -v jaeger); then
    prefixed jaeger "$jaeger" --config "$here/../jaeger/config.yaml"
    export OTEL_EXPORTER_OTLP_ENDPOINT=http://${JAEGER_OTLP_HTTP_ADDR:-127.0.0.1:4318}
    echo "run: traces in Jaeger: http://${JAEGER_QUERY_ADDR:-127.0.0.1:16686}/api/traces/<trace id>" \
      "(and its UI, if the binary has one)" >&2
  else
    echo "run: spans are not exported; to follow orders in Jaeger, build it once with" \
      "\`make jaeger\` (about 6 minutes) or set OTEL_EXPORTER_OTLP_ENDPOINT to a collector's" \
      "OTLP/HTTP address" >&2
  fi
fi

admin=${LOMS_ADMIN_ADDR:-0.0.0.0:8085}
read -r -a notifier_metrics <<< "${NOTIFIERS_METRICS_ADDRS:-127.0.0.1:9101 127.0.0.1:9102 127.0.0.1:9103}"
prefixed loms "$bin/loms" --database-url "$DATABASE_URL" --kafka-brokers "$KAFKA_BROKERS" --admin-addr "$admin"
for i in 1 2 3; do
  NOTIFIER_KAFKA__CLIENT_ID=notifier-$i prefixed "notifier-$i" "$bin/notifier" --kafka-brokers "$KAFKA_BROKERS" \
    --admin-addr "${notifier_metrics[$((i - 1))]}"
done

# Prometheus scraping what this run started, with the alert rules that ship with the system.
scrape() { echo "${1/#0.0.0.0:/127.0.0.1:}"; } # a wildcard listener is scraped on loopback
if prometheus=$(command -v prometheus); then
  targets=$(for a in "${notifier_metrics[@]}"; do printf '"%s", ' "$(scrape "$a")"; done)
  cat > "$STACK_DIR/prometheus.yml" <<YAML
global: {scrape_interval: 5s, evaluation_interval: 15s}
rule_files: ["$(cd "$here/../prometheus" && pwd)/alerts.yml"]
scrape_configs:
  - {job_name: loms, static_configs: [{targets: ["$(scrape "$admin")"]}]}
  - {job_name: notifier, static_configs: [{targets: [${targets%, }]}]}
YAML
  prometheus_addr=${PROMETHEUS_ADDR:-127.0.0.1:9090}
  prefixed prometheus "$prometheus" --config.file="$STACK_DIR/prometheus.yml" \
    --storage.tsdb.path="$STACK_DIR/prometheus-data" --web.listen-address="$prometheus_addr" \
    --log.level=warn
  echo "run: Prometheus on http://$prometheus_addr (targets, alerts)" >&2
else
  echo "run: Prometheus is not installed (deploy/local/setup.sh installs Debian's package);" \
    "metrics on http://$(scrape "$admin")/metrics and the notifiers' ${notifier_metrics[*]}" >&2
fi
echo "run: loms on gRPC ${LOMS_GRPC_ADDR:-0.0.0.0:8083}, HTTP ${LOMS_HTTP_ADDR:-0.0.0.0:8084}, metrics $admin; Ctrl-C stops everything" >&2
# Until any service exits (or a signal arrives).
wait -n "${pids[@]}" || true
