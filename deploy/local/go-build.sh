# Sourced by jaeger.sh and toxiproxy.sh: builds a Go program from the Go module proxy into a
# cache, once.
#
#   go_build NAME BIN PACKAGE GO_GET_ARGUMENTS...
go_build() {
  local name=$1 bin=$2 package=$3
  shift 3
  command -v go >/dev/null || { echo "$name: building it needs Go (https://go.dev/dl)" >&2; return 1; }
  echo "$name: building $package into $(dirname "$bin") (once)" >&2
  local work
  work=$(mktemp -d)
  mkdir -p "$(dirname "$bin")"
  # A throwaway module of our own: `go install` refuses modules with replace directives.
  if ! (
    cd "$work"
    go mod init "loms-$name-build"
    go get "$@"
    go build -o "$bin.partial" "$package"
  ) >"$work/build.log" 2>&1; then
    cat "$work/build.log" >&2
    rm -rf "$work"
    echo "$name: the build failed" >&2
    return 1
  fi
  rm -rf "$work"
  mv "$bin.partial" "$bin"
}
