#!/usr/bin/env bash
# Makes a certificate authority of its own in DIR (once): ca.pem and ca.key, a server
# certificate for 127.0.0.1 and localhost (server.pem, server.key; kafka-keystore.pem: the key
# and the certificate in one file, Kafka's PEM keystore), and a client certificate with CN
# postgres (client.pem, client.key). ECDSA P-256, valid for 30 days; keys PKCS#8, mode 600.
# The secure local stack uses it (stack.sh: KAFKA_SECURITY=sasl_ssl, PG_TLS=1), and so do the
# tests of TLS on the API.
#
#   certs.sh DIR [NAME...]     NAMEs: more DNS names of the server certificate (compose's
#                              service names, for the secure compose file)
set -euo pipefail
dir=${1:?usage: certs.sh DIR [NAME...]}
shift
names="DNS:localhost,IP:127.0.0.1"
for name in "$@"; do names+=",DNS:$name"; done
if [ -f "$dir/.complete" ]; then exit 0; fi
command -v openssl >/dev/null || { echo "certs: openssl is needed (deploy/local/setup.sh installs it)" >&2; exit 1; }
mkdir -p "$dir"
key=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
log=$dir/openssl.log
openssl req -x509 "${key[@]}" -keyout "$dir/ca.key" -out "$dir/ca.pem" -days 30 \
  -subj "/CN=loms local CA $(basename "$dir")" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" 2>"$log"
sign() { # name, subject, extensions
  openssl req "${key[@]}" -keyout "$dir/$1.key" -out "$dir/$1.csr" -subj "$2" 2>>"$log"
  openssl x509 -req -in "$dir/$1.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 30 -out "$dir/$1.pem" -extfile <(printf '%b\n' "$3") 2>>"$log"
}
sign server "/CN=localhost" "subjectAltName=$names\nextendedKeyUsage=serverAuth"
sign client "/CN=postgres" "extendedKeyUsage=clientAuth"
chmod 600 "$dir"/*.key
cat "$dir/server.key" "$dir/server.pem" >"$dir/kafka-keystore.pem"
chmod 600 "$dir/kafka-keystore.pem"
touch "$dir/.complete"
