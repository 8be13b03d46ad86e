#!/usr/bin/env bash
# Provides h2spec (the HTTP/2 conformance checker, github.com/summerwind/h2spec v2.2.1) as
# $ATREST_CACHE_BIN/h2spec for conformance/h2spec.mjs, which runs it against `atrest serve` and the grpc-go
# reference plugin. Built from the Go module proxy through the wrapper module in scripts/setup/h2spec/
# (go.mod pins h2spec and every dependency; h2spec's 2.x tags carry no go.mod of their own, so a bare
# `go install ...@v2.2.1+incompatible` would pick whatever dependency versions are newest that day).
# Idempotent: rebuilds only when the wrapper module or the Go version changes.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="${ATREST_CACHE_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/atrest/bin}"
mkdir -p "$bin"

# shellcheck source=lib/go.sh
source "$here/lib/go.sh"
ensure_go 55-h2spec

hash="$( { go version; cat "$here/h2spec/go.mod" "$here/h2spec/go.sum"; } | sha256sum | cut -c1-16)"
stamp="$bin/h2spec.hash"
if [ -x "$bin/h2spec" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$hash" ]; then
  echo "55-h2spec: h2spec up to date ($hash)"
  exit 0
fi

echo "55-h2spec: building h2spec ($hash, $(go version))"
tmp="$bin/.h2spec.$$"
trap 'rm -f "$tmp"' EXIT
(cd "$here/h2spec" && GOFLAGS=-mod=readonly CGO_ENABLED=0 go build -trimpath -o "$tmp" github.com/summerwind/h2spec/cmd/h2spec)
mv -f "$tmp" "$bin/h2spec"
echo "$hash" >"$stamp"
echo "55-h2spec: built $bin/h2spec (h2spec v2.2.1)"
