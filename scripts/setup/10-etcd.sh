#!/usr/bin/env bash
# Provides etcd, etcdctl and etcdutl (v3.6, the line kube-apiserver 1.3x runs against) in
# $ATREST_CACHE_BIN for the etcd tests, the rewrite benchmark and the end-to-end scenario.
# Built from the Go module proxy through the wrapper module in scripts/setup/etcd/ (the upstream
# modules carry replace directives, so `go install pkg@version` cannot build them directly).
# Idempotent: binaries live in a per-version directory; a rerun with them present does nothing.
set -euo pipefail

ETCD_VERSION=v3.6.16
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="${ATREST_CACHE_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/atrest/bin}"
dest="$bin/etcd-$ETCD_VERSION"

have_all() {
  [[ -x "$dest/etcd" && -x "$dest/etcdctl" && -x "$dest/etcdutl" ]]
}

link_all() {
  for b in etcd etcdctl etcdutl; do
    ln -sfn "etcd-$ETCD_VERSION/$b" "$bin/$b"
  done
}

mkdir -p "$bin"
if have_all; then
  link_all
  echo "etcd $ETCD_VERSION already in $dest"
  exit 0
fi

# shellcheck source=lib/go.sh
source "$here/lib/go.sh"
ensure_go 10-etcd

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "building etcd $ETCD_VERSION (server, etcdctl, etcdutl) with $(go version)"
(
  cd "$here/etcd"
  export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
  for b in etcd etcdctl etcdutl; do
    go build -trimpath -o "$tmp/$b" "./cmd/$b"
  done
)
mkdir -p "$dest.partial"
mv "$tmp/etcd" "$tmp/etcdctl" "$tmp/etcdutl" "$dest.partial/"
rm -rf "$dest"
mv "$dest.partial" "$dest"
link_all
"$bin/etcd" --version | head -1
