#!/usr/bin/env bash
# Prints the path of a toxiproxy-server binary, building it from the Go module proxy the first
# time (then cached). The chaos scenarios put it between a loms and PostgreSQL or Kafka, to cut
# a connection silently (no reset) or hold it back.
#
#   TOXIPROXY_VERSION   the github.com/Shopify/toxiproxy/v2 module version
#   TOXIPROXY_CACHE     where the binary is kept (default ~/.cache/loms-stack/toxiproxy-<version>)
set -euo pipefail
version=${TOXIPROXY_VERSION:-v2.12.0}
cache=${TOXIPROXY_CACHE:-$HOME/.cache/loms-stack/toxiproxy-$version}
bin=$cache/toxiproxy-server

if [ ! -x "$bin" ]; then
  . "$(dirname "$0")/go-build.sh"
  go_build toxiproxy "$bin" github.com/Shopify/toxiproxy/v2/cmd/server \
    "github.com/Shopify/toxiproxy/v2@$version"
fi
echo "$bin"
