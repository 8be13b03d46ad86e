#!/usr/bin/env bash
# Provides kube-apiserver and kubectl (Kubernetes v1.37.2) in $ATREST_CACHE_BIN for the end-to-end
# scenario (e2e/run.sh). Built from the Go module proxy through the build module in e2e/build/: it
# requires k8s.io/kubernetes and points each staging module at its published k8s.io/* v0.37.2, because
# k8s.io/kubernetes' own go.mod replaces them with ./staging/src/... and cannot be `go install`ed.
# Idempotent: binaries live in ~/.cache/atrest/kube-v1.37.2/; a rerun with them present only relinks.
set -euo pipefail

KUBE_VERSION=v1.37.2
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
module="$here/../../e2e/build"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/atrest"
bin="${ATREST_CACHE_BIN:-$cache/bin}"
dest="$cache/kube-$KUBE_VERSION"

have_all() {
  [[ -x "$dest/kube-apiserver" && -x "$dest/kubectl" ]]
}

link_all() {
  for b in kube-apiserver kubectl; do
    ln -sfn "$dest/$b" "$bin/$b"
  done
}

# The scenario makes its CA, serving certificate and service-account keys with openssl.
if ! command -v openssl >/dev/null 2>&1; then
  apt-get install -y --no-install-recommends openssl >/dev/null 2>&1 ||
    { apt-get update >/dev/null && apt-get install -y --no-install-recommends openssl >/dev/null; }
fi

mkdir -p "$bin"
if have_all; then
  link_all
  echo "kube-apiserver and kubectl $KUBE_VERSION already in $dest"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  if [[ -x /usr/local/go/bin/go ]]; then
    export PATH="/usr/local/go/bin:$PATH"
  else
    echo "60-kube-apiserver.sh: Go (>= the version in e2e/build/go.mod) is needed to build kube-apiserver $KUBE_VERSION and was not found" >&2
    exit 1
  fi
fi
if ! grep -q "^require k8s.io/kubernetes $KUBE_VERSION\$" "$module/go.mod"; then
  echo "60-kube-apiserver.sh: $module/go.mod is not for $KUBE_VERSION; run e2e/build/gen-go-mod.sh $KUBE_VERSION" >&2
  exit 1
fi

# The version stamps `make` would set from git (kubectl version and /version report them).
minor="${KUBE_VERSION#v1.}"
minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
started=$(date +%s)
echo "building kube-apiserver and kubectl $KUBE_VERSION with $(go version) on $(nproc) cores (15-40 minutes cold)"
(
  cd "$module"
  export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
  go build -trimpath -ldflags "$ldflags" -o "$tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl
)
rm -rf "$dest.partial"
mkdir -p "$dest.partial"
mv "$tmp/kube-apiserver" "$tmp/kubectl" "$dest.partial/"
rm -rf "$dest"
mv "$dest.partial" "$dest"
link_all
echo "built in $(( $(date +%s) - started ))s:"
"$bin/kube-apiserver" --version
"$bin/kubectl" version --client
