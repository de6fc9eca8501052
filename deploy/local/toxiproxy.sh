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
  command -v go >/dev/null || { echo "toxiproxy: building Toxiproxy needs Go (https://go.dev/dl)" >&2; exit 1; }
  echo "toxiproxy: building github.com/Shopify/toxiproxy/v2@$version into $cache (once)" >&2
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$cache"
  if ! (
    cd "$work"
    go mod init loms-toxiproxy-build
    go get "github.com/Shopify/toxiproxy/v2@$version"
    go build -o "$bin.partial" github.com/Shopify/toxiproxy/v2/cmd/server
  ) >"$work/build.log" 2>&1; then
    cat "$work/build.log" >&2
    echo "toxiproxy: the build failed" >&2
    exit 1
  fi
  mv "$bin.partial" "$bin"
fi
echo "$bin"
