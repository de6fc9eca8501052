#!/usr/bin/env bash
# Prints the path of a Jaeger (v2, all in one) binary, building it from the Go module proxy the
# first time (about 6 minutes on 2 cores; then cached). Built from source, it has no UI pages:
# its query API (what the tests read) works; the compose file's image has the UI as well.
#
#   JAEGER_MODULE_VERSION   the jaegertracing/jaeger module version (v1.76.0 is Jaeger v2.13.0,
#                           the compose file's image)
#   JAEGER_CACHE            where the binary is kept (default ~/.cache/loms-stack/jaeger-<version>)
#   --if-built              print the path only if it is built already; never build
set -euo pipefail
version=${JAEGER_MODULE_VERSION:-v1.76.0}
cache=${JAEGER_CACHE:-$HOME/.cache/loms-stack/jaeger-$version}
bin=$cache/jaeger

if [ ! -x "$bin" ]; then
  [ "${1:-}" = --if-built ] && exit 1
  . "$(dirname "$0")/go-build.sh"
  # Jaeger as a tool of that module (it has replace directives of its own).
  go_build jaeger "$bin" github.com/jaegertracing/jaeger/cmd/jaeger \
    -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$version"
fi
echo "$bin"
