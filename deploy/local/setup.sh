#!/usr/bin/env bash
# Installs what the local stack and the build need and this machine lacks: Java 17 and Maven
# (the Kafka broker's jars come from Maven Central), PostgreSQL 15 server and client, cmake (to
# build librdkafka), OpenSSL's headers and pkg-config (librdkafka's TLS and SASL), openssl (the
# secure stack's certificates), python3 (free ports), promtool (Debian's prometheus package: the
# alert rules' tests), Chromium and its WebDriver (the /docs page's test); Rust and Go (1.24 or newer: the tests build Jaeger with it) it
# only checks, and only a missing Rust stops it. As root on Debian it installs them with apt; otherwise
# it names the exact packages and the command, and fails. `make run`, `make test` and CI call it.
set -euo pipefail

need=()
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
[ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql-15)
command -v psql >/dev/null || need+=(postgresql-client-15)
command -v cmake >/dev/null || need+=(cmake)
command -v pkg-config >/dev/null || need+=(pkg-config)
pkg-config --exists openssl 2>/dev/null || need+=(libssl-dev)
command -v openssl >/dev/null || need+=(openssl)
command -v python3 >/dev/null || need+=(python3)
command -v promtool >/dev/null || need+=(prometheus) # promtool: the alert rules' tests
command -v chromium >/dev/null || need+=(chromium) # the /docs page's test, in a real browser
command -v chromedriver >/dev/null || need+=(chromium-driver)

if ! command -v cargo >/dev/null; then
  echo "setup: cargo is missing: install Rust with rustup (https://rustup.rs)" >&2
  exit 1
fi
if ! command -v go >/dev/null; then
  # Only the tests need it (make jaeger fails then, saying so); make run goes on without Jaeger.
  echo "setup: go is missing: the tests build Jaeger with Go 1.24 or newer (https://go.dev/dl)" >&2
fi
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "setup: installing ${need[*]}" >&2
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
else
  echo "setup: missing packages: ${need[*]}" >&2
  echo "setup: install them with: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
