#!/usr/bin/env bash
# The secure compose file's first job: a CA of its own and a server certificate for every
# service name (deploy/local/certs.sh), copied for each user that reads them (PostgreSQL 999,
# Kafka 1000, loms and the notifiers 10001, Jaeger 10001), keys readable by that user only; the
# Kafka tools' client configuration and the services' SASL password file. Once: a volume that
# has them keeps them.
set -euo pipefail
out=/certs
if [ -f "$out/.complete" ]; then echo "certs: kept"; exit 0; fi
bash /deploy/certs.sh "$out/ca" kafka postgres jaeger loms
for owner in postgres:999 kafka:1000 app:10001 jaeger:10001; do
  name=${owner%%:*} uid=${owner##*:}
  mkdir -p "$out/$name"
  cp "$out/ca/ca.pem" "$out/ca/server.pem" "$out/ca/server.key" "$out/ca/kafka-keystore.pem" "$out/$name/"
  chown -R "$uid:$uid" "$out/$name"
  chmod 700 "$out/$name"
  chmod 600 "$out/$name"/*.key "$out/$name/kafka-keystore.pem"
done
cat >"$out/kafka/admin.properties" <<PROPS
security.protocol=SASL_SSL
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$KAFKA_ADMIN_PASSWORD";
ssl.truststore.type=PEM
ssl.truststore.location=$out/kafka/ca.pem
PROPS
printf '%s\n' "$KAFKA_LOMS_PASSWORD" >"$out/app/kafka.password"
chown 1000:1000 "$out/kafka/admin.properties"
chown 10001:10001 "$out/app/kafka.password"
chmod 600 "$out/kafka/admin.properties" "$out/app/kafka.password"
touch "$out/.complete"
echo "certs: made"
