#!/usr/bin/env bash
# Builds conformance/oracle (kube-apiserver's own EncryptionConfiguration loader and storage transformers,
# k8s.io/apiserver from the Go module proxy) into $ATREST_CACHE_BIN/atrest-oracle. Idempotent: rebuilds
# only when the oracle's sources, go.mod or go.sum change (the binary is keyed by their hash). Go's module
# and build caches are reused, so a rebuild after a source change takes seconds; the first cold build of
# k8s.io/apiserver takes a few minutes on 2 cores.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
src="$root/conformance/oracle"
bin_dir="${ATREST_CACHE_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/atrest/bin}"
mkdir -p "$bin_dir"

# shellcheck source=lib/go.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/go.sh"
ensure_go 40-go-oracle

hash="$(cd "$src" && cat go.mod go.sum $(ls *.go | sort) | sha256sum | cut -c1-16)"
stamp="$bin_dir/atrest-oracle.hash"
if [ -x "$bin_dir/atrest-oracle" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$hash" ]; then
  echo "40-go-oracle: atrest-oracle up to date ($hash)"
  exit 0
fi

echo "40-go-oracle: building atrest-oracle ($hash, $(go version))"
tmp="$bin_dir/.atrest-oracle.$$"
(cd "$src" && GOFLAGS=-mod=readonly go build -trimpath -o "$tmp" .)
mv -f "$tmp" "$bin_dir/atrest-oracle"
echo "$hash" >"$stamp"
echo "40-go-oracle: built $bin_dir/atrest-oracle"
