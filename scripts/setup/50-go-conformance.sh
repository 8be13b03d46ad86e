#!/usr/bin/env bash
# Prepares the Go conformance harness (conformance/, run by conformance/run.sh): downloads the modules of
# every harness module (k8s.io/apiserver v0.37, v0.30 and v0.28 lines, the grpc-go v1.27 old client) so the test
# step is not network-bound, precompiles their tests into Go's build cache, and builds the reference Go
# plugin and the load generator of the benchmark into $ATREST_CACHE_BIN (keyed by source hash; the
# plugin is also linked as atrest-refplugin).
# Idempotent: with caches warm a rerun takes a few seconds. Needs Go >= 1.21 (newer toolchains named in
# go.mod are fetched by Go itself from the module proxy); with no Go at all it fetches the toolchain module.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="${ATREST_CACHE_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/atrest/bin}"
mkdir -p "$bin"

# shellcheck source=lib/go.sh
source "$root/scripts/setup/lib/go.sh"
ensure_go 50-go-conformance
echo "50-go-conformance: $(go version)"

# Skip the download/precompile pass when nothing in the harness changed since the last successful one.
stamp="$bin/atrest-conformance-prepared.hash"
hash="$( { go version; cd "$root/conformance" && find . -name 'go.mod' -o -name 'go.sum' -o -name '*.go' | sort | xargs cat; } | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$hash" ]; then
  for m in harness apiserver-v0.37 apiserver-v0.30 apiserver-v0.28 oldclient refplugin; do
    (cd "$root/conformance/$m" && GOFLAGS=-mod=readonly go mod download)
  done
  # Compile (not run) every test package so `npm test` only links and runs them.
  for m in apiserver-v0.37 apiserver-v0.30 apiserver-v0.28 oldclient; do
    (cd "$root/conformance/$m" && GOFLAGS=-mod=readonly go test -count=1 -run '^$' ./... >/dev/null)
  done
  echo "$hash" >"$stamp"
fi

# shellcheck source=../../conformance/tools.sh
. "$root/conformance/tools.sh"
conformance_build_tools
# A stable name for the unit tests that talk to a grpc-go server (test/kms-client/grpc-go.test.ts).
ln -sfn "$(basename "$REFPLUGIN")" "$bin/atrest-refplugin"
echo "50-go-conformance: modules ready; $REFPLUGIN and $LOADGEN built"
