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
  command -v go >/dev/null || { echo "jaeger: building Jaeger needs Go (https://go.dev/dl)" >&2; exit 1; }
  echo "jaeger: building Jaeger from module github.com/jaegertracing/jaeger@$version into $cache (once)" >&2
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$cache"
  # A module of our own that uses Jaeger as a tool: `go install` refuses its replace directives.
  if ! (
    cd "$work"
    go mod init loms-jaeger-build
    go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$version"
    go build -o "$bin.partial" github.com/jaegertracing/jaeger/cmd/jaeger
  ) >"$work/build.log" 2>&1; then
    cat "$work/build.log" >&2
    echo "jaeger: the build failed" >&2
    exit 1
  fi
  mv "$bin.partial" "$bin"
fi
echo "$bin"
