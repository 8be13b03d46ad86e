# Sourced by scripts/setup/50-go-conformance.sh and bench/conformance.bench.sh: builds the reference Go
# plugin and the load generator into the atrest cache bin, keyed by a hash of their sources, module files
# and the Go version, so reruns reuse them. Sets REFPLUGIN and LOADGEN to the binaries.

conformance_build_tools() {
  local here bin key
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  bin="${ATREST_CACHE_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/atrest/bin}"
  mkdir -p "$bin"
  key="$( { go version; cat "$here"/refplugin/go.* "$here"/refplugin/*.go; } | sha256sum | cut -c1-12)"
  REFPLUGIN="$bin/atrest-refplugin-$key"
  if [ ! -x "$REFPLUGIN" ]; then
    (cd "$here/refplugin" && go build -o "$REFPLUGIN.tmp" . && mv "$REFPLUGIN.tmp" "$REFPLUGIN") || return 1
  fi
  key="$( { go version; cat "$here"/apiserver-v0.37/go.* "$here"/apiserver-v0.37/cmd/loadgen/*.go; } | sha256sum | cut -c1-12)"
  LOADGEN="$bin/atrest-loadgen-$key"
  if [ ! -x "$LOADGEN" ]; then
    (cd "$here/apiserver-v0.37" && go build -o "$LOADGEN.tmp" ./cmd/loadgen && mv "$LOADGEN.tmp" "$LOADGEN") || return 1
  fi
  export REFPLUGIN LOADGEN
}
