#!/usr/bin/env bash
# The real local stack as plain processes: PostgreSQL 15 and a KRaft Apache Kafka cluster
# (one node by default, or three) from Maven Central jars, with the topics created by
# deploy/kafka-init.sh (the same step the compose file runs).
#
#   stack.sh up | down | status | env | pg-stop | pg-start | init
#   stack.sh pg-kill | pg-promote      SIGKILL the primary; promote the standby (PG_STANDBY=1)
#   stack.sh kafka-stop [N] | kafka-kill [N] | kafka-start [N]    one node by number, or all
#   stack.sh kafka-freeze [N] | kafka-thaw [N]                     SIGSTOP / SIGCONT: a node that
#                                                                  stops answering, and back
#
#   STACK_DIR              state folder (default /tmp/loms-stack)
#   PG_PORT                PostgreSQL port (default 5432)
#   KAFKA_NODES            1 (default) or 3: combined broker+controller nodes
#   KAFKA_PORT             broker port of a single node (default 9092)
#   KAFKA_CONTROLLER_PORT  its KRaft controller port (default 9093)
#   KAFKA_PORTS            broker ports of the nodes, comma-separated (default: KAFKA_PORT for
#                          one node; 9092,9094,9096 for three)
#   KAFKA_CONTROLLER_PORTS their controller ports (default: 9093,9095,9097 for three)
#   With three nodes, kafka-init creates loms.order-events with replication factor 3 and
#   min.insync.replicas=2.
#   KAFKA_VERSION          default 4.1.0 (the compose file's apache/kafka image is the same)
#   KAFKA_LIBS_CACHE       where the jars are kept (default ~/.cache/loms-stack/kafka-<version>)
#   KAFKA_JVM_OPTS         more options for the broker JVMs (default -XX:TieredStopAtLevel=1:
#                          the quick JIT only; set it empty for the JVM's default)
#   KAFKA_GC               the broker JVMs' collector (default -XX:+UseZGC, pauses under a
#                          millisecond; "-XX:+UseG1GC -XX:MaxGCPauseMillis=20" is Kafka's own);
#                          its log is logs/gc.log in each node's folder
#   KAFKA_SECURITY         plaintext (default) or sasl_ssl: the brokers' only client listener is
#                          SASL_SSL (SCRAM-SHA-512 users `admin`, for the brokers and the tools,
#                          and `loms`, for the services, created when the nodes are formatted;
#                          certificates from the stack's own CA); env prints the settings
#   PG_TLS                 0 (default) or 1: PostgreSQL accepts TLS connections only, from
#                          clients with a certificate of the stack's CA (CN postgres); env
#                          prints DATABASE_URL with sslmode=verify-full and those files
#   PG_STANDBY             0 (default) or 1: a synchronous streaming standby of PostgreSQL
#                          (pg_basebackup, synchronous_standby_names, synchronous_commit=on)
#                          on PG_STANDBY_PORT (default PG_PORT + 1); env prints its URL as
#                          DATABASE_STANDBY_URL
#   KAFKA_PROXIED_PORTS    LISTEN:ADVERTISED[,...] (one plaintext node only): a broker listener on
#                          each LISTEN port, advertised as 127.0.0.1:ADVERTISED, where a proxy
#                          (Toxiproxy) is to listen: a client that bootstraps through that proxy
#                          is told the proxy's address, so all its traffic passes the proxy;
#                          env prints them as KAFKA_PROXIED_LISTENERS
#   All four are remembered by the stack (STACK_DIR/security) for its later commands.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STACK_DIR=${STACK_DIR:-/tmp/loms-stack}
PG_PORT=${PG_PORT:-5432}
KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
KAFKA_NODES=${KAFKA_NODES:-1}
case "$KAFKA_NODES" in
  1)
    KAFKA_PORTS=${KAFKA_PORTS:-$KAFKA_PORT}
    KAFKA_CONTROLLER_PORTS=${KAFKA_CONTROLLER_PORTS:-$KAFKA_CONTROLLER_PORT}
    ;;
  3)
    KAFKA_PORTS=${KAFKA_PORTS:-9092,9094,9096}
    KAFKA_CONTROLLER_PORTS=${KAFKA_CONTROLLER_PORTS:-9093,9095,9097}
    ;;
  *) echo "stack: KAFKA_NODES must be 1 or 3, not $KAFKA_NODES" >&2; exit 2 ;;
esac
IFS=, read -r -a broker_ports <<<"$KAFKA_PORTS"
IFS=, read -r -a controller_ports <<<"$KAFKA_CONTROLLER_PORTS"
if [ ${#broker_ports[@]} -ne "$KAFKA_NODES" ] || [ ${#controller_ports[@]} -ne "$KAFKA_NODES" ]; then
  echo "stack: KAFKA_PORTS and KAFKA_CONTROLLER_PORTS must name $KAFKA_NODES ports each" >&2
  exit 2
fi
# Replicated topics need every node: a write is acknowledged by two of three.
if [ "$KAFKA_NODES" = 3 ]; then REPLICATION=3; MIN_ISR=2; else REPLICATION=1; MIN_ISR=1; fi
KAFKA_VERSION=${KAFKA_VERSION:-4.1.0}
LOG4J_VERSION=2.24.3
KAFKA_LIBS_CACHE=${KAFKA_LIBS_CACHE:-$HOME/.cache/loms-stack/kafka-$KAFKA_VERSION}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_DB=loms

pg_dir=$STACK_DIR/postgres
standby_dir=$STACK_DIR/postgres-standby
kafka_dir=$STACK_DIR/kafka
tls_dir=$STACK_DIR/tls
libs=$KAFKA_LIBS_CACHE/libs

# A stack keeps the security it was made with.
if [ -f "$STACK_DIR/security" ]; then
  saved_kafka=$(sed -n 's/^KAFKA_SECURITY=//p' "$STACK_DIR/security")
  saved_pg=$(sed -n 's/^PG_TLS=//p' "$STACK_DIR/security")
  saved_standby=$(sed -n 's/^PG_STANDBY=//p' "$STACK_DIR/security")
  saved_proxied=$(sed -n 's/^KAFKA_PROXIED_PORTS=//p' "$STACK_DIR/security")
  KAFKA_PROXIED_PORTS=${KAFKA_PROXIED_PORTS:-$saved_proxied}
  KAFKA_SECURITY=${KAFKA_SECURITY:-$saved_kafka}
  PG_TLS=${PG_TLS:-$saved_pg}
  PG_STANDBY=${PG_STANDBY:-$saved_standby}
fi
PG_STANDBY=${PG_STANDBY:-0}
PG_STANDBY_PORT=${PG_STANDBY_PORT:-$((PG_PORT + 1))}
case "$PG_STANDBY" in
  0 | 1) ;;
  *) echo "stack: PG_STANDBY must be 0 or 1, not $PG_STANDBY" >&2; exit 2 ;;
esac
KAFKA_SECURITY=${KAFKA_SECURITY:-plaintext}
PG_TLS=${PG_TLS:-0}
case "$KAFKA_SECURITY" in
  plaintext | sasl_ssl) ;;
  *) echo "stack: KAFKA_SECURITY must be plaintext or sasl_ssl, not $KAFKA_SECURITY" >&2; exit 2 ;;
esac
case "$PG_TLS" in
  0 | 1) ;;
  *) echo "stack: PG_TLS must be 0 or 1, not $PG_TLS" >&2; exit 2 ;;
esac
SASL_MECHANISM=SCRAM-SHA-512

log() { echo "stack: $*" >&2; }
fail_with_log() { # message, log file
  log "$1"
  if [ -f "$2" ]; then log "last lines of $2:"; tail -n 40 "$2" >&2; fi
  exit 1
}

# PostgreSQL refuses to run as root; run it as the postgres user then.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_running() { [ -f "$pg_dir/data/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$pg_dir/data" status >/dev/null 2>&1; }
standby_running() { [ -f "$standby_dir/data/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$standby_dir/data" status >/dev/null 2>&1; }
# Node n (1-based) keeps its state in node_dir n: the single node in kafka/, as before.
node_dir() { if [ "$KAFKA_NODES" = 1 ]; then echo "$kafka_dir"; else echo "$kafka_dir/node-$1"; fi; }
node_pid() { cat "$(node_dir "$1")/kafka.pid" 2>/dev/null || true; }
node_running() { local pid; pid=$(node_pid "$1"); [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }
nodes() { seq 1 "$KAFKA_NODES"; }
proxied_listeners() { [ -n "${KAFKA_PROXIED_PORTS:-}" ] && [ "$KAFKA_NODES" = 1 ] && [ "$KAFKA_SECURITY" = plaintext ]; }
bootstrap() {
  local n out=()
  for n in $(nodes); do out+=("127.0.0.1:${broker_ports[$((n - 1))]}"); done
  (IFS=,; echo "${out[*]}")
}

psql_stack() {
  if [ "$PG_TLS" = 1 ]; then
    PGSSLMODE=verify-full PGSSLROOTCERT=$tls_dir/ca.pem PGSSLCERT=$tls_dir/client.pem PGSSLKEY=$tls_dir/client.key \
      psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -qAt "$@"
  else
    psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -qAt "$@"
  fi
}

# The stack's own CA and certificates (certs.sh).
tls_init() { "$here/certs.sh" "$tls_dir"; }

# The SASL password of a stack user (`admin` or `loms`), made once.
sasl_password() {
  local file=$kafka_dir/sasl/$1.password
  if [ ! -f "$file" ]; then
    mkdir -p "$kafka_dir/sasl"
    python3 -c 'import secrets; print(secrets.token_urlsafe(18))' >"$file"
    chmod 600 "$file"
  fi
  cat "$file"
}

scram_jaas() { # user
  echo "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"$1\" password=\"$(sasl_password "$1")\";"
}

# What the tools (kafka-init, the readiness probe) connect with: nothing in plaintext mode.
tools_config() {
  if [ "$KAFKA_SECURITY" = plaintext ]; then return 0; fi
  cat >"$kafka_dir/tools.properties" <<PROPS
security.protocol=SASL_SSL
sasl.mechanism=$SASL_MECHANISM
sasl.jaas.config=$(scram_jaas admin)
ssl.truststore.type=PEM
ssl.truststore.location=$tls_dir/ca.pem
PROPS
  echo "$kafka_dir/tools.properties"
}

pg_start() {
  if pg_running; then return 0; fi
  mkdir -p "$pg_dir"
  if [ ! -f "$pg_dir/data/PG_VERSION" ]; then
    [ "$(id -u)" = 0 ] && chown postgres "$pg_dir"
    as_pg "$PG_BIN/initdb" -D "$pg_dir/data" -U postgres --auth=trust -E UTF8 >"$pg_dir/initdb.log" 2>&1 ||
      fail_with_log "initdb failed" "$pg_dir/initdb.log"
  fi
  local tls_options=""
  if [ "$PG_TLS" = 1 ]; then
    tls_init
    # The server's own copies: its key must belong to the user it runs as.
    cp "$tls_dir/server.pem" "$tls_dir/ca.pem" "$pg_dir/"
    cp "$tls_dir/server.key" "$pg_dir/server.key"
    chmod 600 "$pg_dir/server.key"
    [ "$(id -u)" = 0 ] && chown postgres "$pg_dir/server.pem" "$pg_dir/server.key" "$pg_dir/ca.pem"
    # TCP only with TLS and a client certificate of the stack's CA whose CN is the user.
    as_pg tee "$pg_dir/data/pg_hba.conf" >/dev/null <<HBA
local all all trust
hostssl all all 127.0.0.1/32 trust clientcert=verify-full
hostnossl all all 0.0.0.0/0 reject
HBA
    tls_options="-c ssl=on -c ssl_cert_file=$pg_dir/server.pem -c ssl_key_file=$pg_dir/server.key -c ssl_ca_file=$pg_dir/ca.pem"
  fi
  # A commit waits until the standby has flushed it: what a client was told survives failover.
  local standby_options=""
  if [ "$PG_STANDBY" = 1 ]; then
    standby_options="-c synchronous_standby_names=standby -c synchronous_commit=on"
  fi
  # Sockets in the state folder, so that several stacks never share /var/run/postgresql.
  as_pg "$PG_BIN/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/postgres.log" -w -t 60 \
    -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $pg_dir -c max_connections=300 -c fsync=${PG_FSYNC:-on} $tls_options $standby_options" \
    start >/dev/null || fail_with_log "PostgreSQL did not start" "$pg_dir/postgres.log"
  local deadline=$((SECONDS + 60))
  until psql_stack -d postgres -c 'select 1' >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || fail_with_log "PostgreSQL does not answer queries" "$pg_dir/postgres.log"
    sleep 0.2
  done
  # Before the first write: with a synchronous standby named, a commit waits for it.
  if [ "$PG_STANDBY" = 1 ]; then standby_start; fi
  if [ "$(psql_stack -d postgres -c "select 1 from pg_database where datname = '$PG_DB'")" != 1 ]; then
    psql_stack -d postgres -c "create database $PG_DB" >/dev/null
  fi
  log "PostgreSQL up on 127.0.0.1:$PG_PORT"
}

pg_stop() {
  if pg_running; then as_pg "$PG_BIN/pg_ctl" -D "$pg_dir/data" -m fast -w stop >/dev/null; log "PostgreSQL stopped"; fi
  if standby_running; then as_pg "$PG_BIN/pg_ctl" -D "$standby_dir/data" -m fast -w stop >/dev/null; log "PostgreSQL standby stopped"; fi
}

# The standby: a base backup of the primary that streams its WAL, named `standby` so that the
# primary's synchronous_standby_names waits for it.
standby_start() {
  if standby_running; then return 0; fi
  if [ "$PG_TLS" = 1 ]; then log "PG_STANDBY=1 is not offered with PG_TLS=1"; exit 2; fi
  mkdir -p "$standby_dir"
  [ "$(id -u)" = 0 ] && chown postgres "$standby_dir"
  if [ ! -f "$standby_dir/data/PG_VERSION" ]; then
    as_pg "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$PG_PORT" -U postgres -D "$standby_dir/data" -X stream -R \
      >"$standby_dir/basebackup.log" 2>&1 || fail_with_log "pg_basebackup failed" "$standby_dir/basebackup.log"
    echo "primary_conninfo = 'host=127.0.0.1 port=$PG_PORT user=postgres application_name=standby'" |
      as_pg tee -a "$standby_dir/data/postgresql.auto.conf" >/dev/null
  fi
  as_pg "$PG_BIN/pg_ctl" -D "$standby_dir/data" -l "$standby_dir/postgres.log" -w -t 60 \
    -o "-p $PG_STANDBY_PORT -c listen_addresses=127.0.0.1 -k $standby_dir -c max_connections=300 -c fsync=${PG_FSYNC:-on}" \
    start >/dev/null || fail_with_log "the PostgreSQL standby did not start" "$standby_dir/postgres.log"
  log "PostgreSQL standby up on 127.0.0.1:$PG_STANDBY_PORT, streaming synchronously"
}

# The primary dies at once (SIGKILL to the postmaster): no shutdown checkpoint, no goodbye to
# its clients beyond what the kernel sends.
pg_kill() {
  local pid
  pid=$(head -1 "$pg_dir/data/postmaster.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid"
    log "PostgreSQL primary killed (pid $pid)"
  fi
}

pg_promote() {
  as_pg "$PG_BIN/pg_ctl" -D "$standby_dir/data" -w -t 60 promote >/dev/null ||
    fail_with_log "promotion failed" "$standby_dir/postgres.log"
  log "PostgreSQL standby promoted: primary on 127.0.0.1:$PG_STANDBY_PORT"
}

fetch_kafka() {
  if [ -f "$libs/.complete" ]; then return 0; fi
  log "fetching Apache Kafka $KAFKA_VERSION jars from Maven Central into $KAFKA_LIBS_CACHE (once)"
  local work
  mkdir -p "$KAFKA_LIBS_CACHE"
  work=$(mktemp -d "$KAFKA_LIBS_CACHE/fetch.XXXXXX")
  cat >"$work/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.stack</groupId><artifactId>kafka-libs</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-api</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
POM
  # The short `dependency:` prefix resolves to a 2013 plugin in Maven 3.8: name it in full.
  if ! (cd "$work" && mvn -q -B org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
    -DoutputDirectory="$work/libs" >"$work/mvn.log" 2>&1); then
    fail_with_log "Maven could not fetch the Kafka jars" "$work/mvn.log"
  fi
  touch "$work/libs/.complete"
  # Another stack may have finished first; either copy is complete.
  mv -T "$work/libs" "$libs" 2>/dev/null || true
  rm -rf "$work"
}

kafka_tool() { # class, args...
  local class=$1; shift
  java -Xmx256m -Dlog4j2.configurationFile="$kafka_dir/tools-log4j2.properties" -cp "$libs/*" "$class" "$@"
}

write_configs() { # node
  local n=$1 dir voters="" i
  dir=$(node_dir "$n")
  for i in $(nodes); do voters+="${voters:+,}$i@127.0.0.1:${controller_ports[$((i - 1))]}"; done
  mkdir -p "$dir/data" "$dir/logs"
  local listener=PLAINTEXT security=""
  # Listeners advertised as proxies' addresses (KAFKA_PROXIED_PORTS), named PROXIED1, PROXIED2...
  local proxied_listen="" proxied_advertised="" proxied_map="" pair i=0
  if proxied_listeners; then
    for pair in ${KAFKA_PROXIED_PORTS//,/ }; do
      i=$((i + 1))
      proxied_listen+=",PROXIED$i://127.0.0.1:${pair%%:*}"
      proxied_advertised+=",PROXIED$i://127.0.0.1:${pair##*:}"
      proxied_map+=",PROXIED$i:PLAINTEXT"
    done
  fi
  if [ "$KAFKA_SECURITY" = sasl_ssl ]; then
    listener=SASL_SSL
    # The controllers' listener stays on loopback in plaintext; brokers and clients meet on
    # SASL_SSL only, the brokers among themselves as `admin`.
    security="sasl.enabled.mechanisms=$SASL_MECHANISM
sasl.mechanism.inter.broker.protocol=$SASL_MECHANISM
listener.name.sasl_ssl.$(tr 'A-Z' 'a-z' <<<"$SASL_MECHANISM").sasl.jaas.config=$(scram_jaas admin)
ssl.keystore.type=PEM
ssl.keystore.location=$tls_dir/kafka-keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=$tls_dir/ca.pem"
  fi
  cat >"$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$voters
listeners=$listener://127.0.0.1:${broker_ports[$((n - 1))]},CONTROLLER://127.0.0.1:${controller_ports[$((n - 1))]}$proxied_listen
advertised.listeners=$listener://127.0.0.1:${broker_ports[$((n - 1))]}$proxied_advertised
inter.broker.listener.name=$listener
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,$listener:$listener$proxied_map
$security
log.dirs=$dir/data
num.partitions=1
default.replication.factor=$REPLICATION
min.insync.replicas=$MIN_ISR
offsets.topic.replication.factor=$REPLICATION
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=$REPLICATION
transaction.state.log.min.isr=$MIN_ISR
share.coordinator.state.topic.replication.factor=$REPLICATION
share.coordinator.state.topic.min.isr=$MIN_ISR
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
# A clean stop hands leadership over before the node goes.
controlled.shutdown.enable=true
# A node that died is fenced, and its partitions led by others, after this long without a
# heartbeat (the default is 9 s; on loopback a missed 1.5 s heartbeat means a dead node).
broker.session.timeout.ms=${KAFKA_BROKER_SESSION_MS:-6000}
broker.heartbeat.interval.ms=1500
PROPS
  cat >"$dir/log4j2.properties" <<PROPS
rootLogger.level=INFO
rootLogger.appenderRef.file.ref=file
appender.file.type=File
appender.file.name=file
appender.file.fileName=$dir/logs/server.log
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
logger.kafka.name=org.apache.kafka
logger.kafka.level=INFO
PROPS
  cat >"$kafka_dir/tools-log4j2.properties" <<PROPS
rootLogger.level=WARN
rootLogger.appenderRef.stderr.ref=stderr
appender.stderr.type=Console
appender.stderr.name=stderr
appender.stderr.target=SYSTEM_ERR
appender.stderr.layout.type=PatternLayout
appender.stderr.layout.pattern=%p %m%n
PROPS
}

cluster_id() {
  if [ ! -f "$kafka_dir/cluster.id" ]; then
    # As Kafka's own random ids: URL-safe base64 of 16 random bytes, never starting with "-"
    # (one in 64 would, and the storage tool would read it as an option).
    python3 -c '
import base64, uuid
while True:
    id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    if not id.startswith("-"):
        print(id)
        break' >"$kafka_dir/cluster.id"
  fi
  cat "$kafka_dir/cluster.id"
}

node_start() { # node
  local n=$1 dir
  if node_running "$n"; then return 0; fi
  dir=$(node_dir "$n")
  if [ "$KAFKA_SECURITY" = sasl_ssl ]; then tls_init; fi
  write_configs "$n"
  if [ ! -f "$dir/data/meta.properties" ]; then
    local users=()
    if [ "$KAFKA_SECURITY" = sasl_ssl ]; then
      users=(--add-scram "$SASL_MECHANISM=[name=admin,password=$(sasl_password admin)]"
        --add-scram "$SASL_MECHANISM=[name=loms,password=$(sasl_password loms)]")
    fi
    java -cp "$libs/*" -Dlog4j2.configurationFile="$kafka_dir/tools-log4j2.properties" kafka.tools.StorageTool \
      format -t "$(cluster_id)" -c "$dir/server.properties" "${users[@]}" >"$dir/format.log" 2>&1 ||
      fail_with_log "formatting the KRaft log folder of node $n failed" "$dir/format.log"
  fi
  # setsid: the node outlives this script, in a session of its own, and ignores the caller's
  # Ctrl-C; `down` stops it by its pid.
  # The quick JIT only (C1): a fresh broker's optimising compiler (C2) takes about a third of its
  # CPU for minutes, and on a small machine that shares its cores with PostgreSQL and the
  # services it was the largest source of latency tails (end to end p99 at 900 orders/s 378 ms
  # with it, 12 ms without). A stack here lives minutes, not weeks.
  # ZGC collects beside the broker instead of stopping it: on two cores shared with everything
  # else G1's young pauses reached 100 ms and were the end-to-end tail at half capacity (p99
  # 31-213 ms with G1, 9-18 ms with ZGC; at 500/s 9-70 and 5-6 ms). The collector's log is kept,
  # as Kafka's own start script keeps it: the first suspect of a latency tail.
  # shellcheck disable=SC2086 # KAFKA_GC, KAFKA_JVM_OPTS: several options, split on purpose.
  setsid java -Xms256m -Xmx${KAFKA_HEAP:-768m} ${KAFKA_GC--XX:+UseZGC} -Djava.awt.headless=true \
    "-Xlog:gc*,safepoint:file=$dir/logs/gc.log:time,uptime:filecount=4,filesize=20M" \
    ${KAFKA_JVM_OPTS--XX:TieredStopAtLevel=1} \
    -Dkafka.logs.dir="$dir/logs" -Dlog4j2.configurationFile="$dir/log4j2.properties" \
    -cp "$libs/*" kafka.Kafka "$dir/server.properties" \
    >"$dir/logs/stdout.log" 2>&1 </dev/null &
  echo $! >"$dir/kafka.pid"
}

# Starts node `$1`, or every node, and waits until the cluster serves: a metadata round trip
# and the topics in place, not an open port.
kafka_start() {
  local n started=
  fetch_kafka
  mkdir -p "$kafka_dir"
  for n in ${1:-$(nodes)}; do
    if ! node_running "$n"; then node_start "$n"; started=1; fi
  done
  if [ -z "$started" ]; then return 0; fi
  # One node of a running cluster: ready once it answers; the topics exist already.
  if [ -n "${1:-}" ] && [ "$KAFKA_NODES" != 1 ]; then
    node_ready "$1"
    return 0
  fi
  INIT_WAIT_SECONDS=${KAFKA_WAIT_SECONDS:-120} kafka_init >"$kafka_dir/init.log" 2>&1 || {
    # A node that exits while the cluster forms (seen once with three nodes, its cause not
    # known yet: its errors are logged here) is started once more.
    if [ -z "${KAFKA_START_RETRIED:-}" ]; then
      local exited=()
      for n in $(nodes); do node_running "$n" || exited+=("$n"); done
      if [ ${#exited[@]} -gt 0 ]; then
        for n in "${exited[@]}"; do
          log "Kafka node $n exited while the cluster formed; its errors: $(grep -m 5 -E 'ERROR|FATAL' "$(node_dir "$n")/logs/server.log" | tr '\n' ' ')"
        done
        log "starting the exited nodes once more"
        KAFKA_START_RETRIED=1 kafka_start
        return
      fi
    fi
    for n in $(nodes); do
      node_running "$n" || fail_with_log "Kafka node $n exited" "$(node_dir "$n")/logs/server.log"
    done
    cat "$kafka_dir/init.log" >&2
    fail_with_log "the Kafka cluster is not ready" "$(node_dir 1)/logs/server.log"
  }
  log "Kafka up on $(bootstrap); $(tr '\n' ' ' <"$kafka_dir/init.log")"
}

# Waits until node `$1` answers a request (its API versions), not just opens its port.
node_ready() {
  local n=$1 deadline=$((SECONDS + ${KAFKA_WAIT_SECONDS:-120}))
  local config=() file
  file=$(tools_config)
  if [ -n "$file" ]; then config=(--command-config "$file"); fi
  until kafka_tool org.apache.kafka.tools.BrokerApiVersionsCommand \
    --bootstrap-server "127.0.0.1:${broker_ports[$((n - 1))]}" "${config[@]}" >/dev/null 2>&1; do
    node_running "$n" || fail_with_log "Kafka node $n exited" "$(node_dir "$n")/logs/server.log"
    [ "$SECONDS" -lt "$deadline" ] || fail_with_log "Kafka node $n does not answer" "$(node_dir "$n")/logs/server.log"
    sleep 1
  done
  log "Kafka node $n up on 127.0.0.1:${broker_ports[$((n - 1))]}"
}

# deploy/kafka-init.sh, the compose file's init step, with the tools of the cached jars.
kafka_init() {
  KAFKA_BOOTSTRAP=$(bootstrap) REPLICATION_FACTOR=$REPLICATION MIN_INSYNC_REPLICAS=$MIN_ISR \
    KAFKA_COMMAND_CONFIG=$(tools_config) \
    KAFKA_TOPICS_CMD="java -Xmx256m -Dlog4j2.configurationFile=$kafka_dir/tools-log4j2.properties -cp $libs/* org.apache.kafka.tools.TopicCommand" \
    "$here/../kafka-init.sh"
}

node_signal() { # node, signal
  local pid
  pid=$(node_pid "$1")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill "-$2" "$pid"; fi
}

node_wait() { # node, signal it got, seconds before SIGKILL
  local n=$1 pid
  pid=$(node_pid "$n")
  if [ -n "$pid" ]; then
    local deadline=$((SECONDS + $3))
    while kill -0 "$pid" 2>/dev/null; do
      if [ "$SECONDS" -ge "$deadline" ] && kill -0 "$pid" 2>/dev/null; then
        log "Kafka node $n did not stop within $3 s; killed"
        kill -KILL "$pid" 2>/dev/null || true
        deadline=$((SECONDS + 3600)) # said once
      fi
      sleep 0.2
    done
    if [ "$KAFKA_NODES" = 1 ]; then log "Kafka stopped ($2)"; else log "Kafka node $n stopped ($2)"; fi
  fi
  rm -f "$(node_dir "$n")/kafka.pid"
}

# Stops node `$2`, or every node at once: stopped one by one, the last ones would wait for a
# controller quorum that is already gone. A clean stop of one node hands its leadership over.
kafka_signal() { # signal, [node]
  local n patience=60
  if [ -z "${2:-}" ] && [ "$KAFKA_NODES" != 1 ]; then patience=20; fi
  for n in ${2:-$(nodes)}; do node_signal "$n" "$1"; done
  for n in ${2:-$(nodes)}; do node_wait "$n" "$1" "$patience"; done
}

kafka_stop() { kafka_signal TERM "${1:-}"; }
# A node that stops answering without closing anything (a frozen host): SIGSTOP, then SIGCONT.
kafka_freeze() { local n; for n in ${1:-$(nodes)}; do node_signal "$n" STOP; done; }
kafka_thaw() { local n; for n in ${1:-$(nodes)}; do node_signal "$n" CONT; done; }
kafka_kill() { kafka_signal KILL "${1:-}"; }

# KEY='value' lines, for `eval` (or `set -a; . file`): the URL's `&` must not end a command.
print_env() {
  local url="postgres://postgres@127.0.0.1:$PG_PORT/$PG_DB"
  if [ "$PG_TLS" = 1 ]; then
    url+="?sslmode=verify-full&sslrootcert=$tls_dir/ca.pem&sslcert=$tls_dir/client.pem&sslkey=$tls_dir/client.key"
  fi
  local lines=("DATABASE_URL=$url" "KAFKA_BROKERS=$(bootstrap)")
  if [ "$PG_STANDBY" = 1 ]; then
    lines+=("DATABASE_STANDBY_URL=postgres://postgres@127.0.0.1:$PG_STANDBY_PORT/$PG_DB")
  fi
  if [ "$KAFKA_SECURITY" = sasl_ssl ]; then
    lines+=("KAFKA_SECURITY_PROTOCOL=SASL_SSL" "KAFKA_SASL_MECHANISM=$SASL_MECHANISM"
      "KAFKA_SASL_USERNAME=loms" "KAFKA_SASL_PASSWORD=$(sasl_password loms)"
      "KAFKA_CA_LOCATION=$tls_dir/ca.pem")
  fi
  # Under another name than the setting, so that a stack started by the command does not take it.
  if proxied_listeners; then lines+=("KAFKA_PROXIED_LISTENERS=$KAFKA_PROXIED_PORTS"); fi
  lines+=("KAFKA_NODES=$KAFKA_NODES" "KAFKA_REPLICATION=$REPLICATION" "STACK_DIR=$STACK_DIR")
  local line
  for line in "${lines[@]}"; do printf "%s='%s'\n" "${line%%=*}" "${line#*=}"; done
}

status() {
  local rc=0
  if pg_running; then echo "postgres: up (127.0.0.1:$PG_PORT)"; else echo "postgres: down"; rc=3; fi
  if [ "$PG_STANDBY" = 1 ]; then
    if standby_running; then echo "postgres standby: up (127.0.0.1:$PG_STANDBY_PORT)"; else echo "postgres standby: down"; rc=3; fi
  fi
  local n
  for n in $(nodes); do
    if node_running "$n"; then echo "kafka node $n: up (127.0.0.1:${broker_ports[$((n - 1))]}, pid $(node_pid "$n"))"; else echo "kafka node $n: down"; rc=3; fi
  done
  return $rc
}

mkdir -p "$STACK_DIR"
case "${1:-}" in
  up)
    printf 'KAFKA_SECURITY=%s\nPG_TLS=%s\nPG_STANDBY=%s\nKAFKA_PROXIED_PORTS=%s\n' \
      "$KAFKA_SECURITY" "$PG_TLS" "$PG_STANDBY" "${KAFKA_PROXIED_PORTS:-}" >"$STACK_DIR/security"
    pg_start
    kafka_start
    ;;
  down)
    kafka_stop
    pg_stop
    ;;
  status) status ;;
  env) print_env ;;
  kafka-stop) kafka_stop "${2:-}" ;;
  kafka-kill) kafka_kill "${2:-}" ;;
  kafka-freeze) kafka_freeze "${2:-}" ;;
  kafka-thaw) kafka_thaw "${2:-}" ;;
  kafka-start) kafka_start "${2:-}" ;;
  pg-stop) pg_stop ;;
  pg-start) pg_start ;;
  pg-kill) pg_kill ;;
  pg-promote) pg_promote ;;
  fetch) fetch_kafka ;;
  init) kafka_init ;;
  *)
    echo "usage: $0 up|down|status|env|kafka-stop [N]|kafka-kill [N]|kafka-freeze [N]|kafka-thaw [N]|kafka-start [N]|pg-stop|pg-start|pg-kill|pg-promote|fetch|init" >&2
    exit 2
    ;;
esac
