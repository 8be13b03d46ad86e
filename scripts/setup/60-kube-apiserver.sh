#!/usr/bin/env bash
# Provides the Kubernetes binaries of the end-to-end scenario (e2e/run.sh) in $ATREST_CACHE_BIN:
#   kube-apiserver, kubectl        v1.37.2   build module e2e/build/           (the default release)
#   kube-apiserver-v1.28.15        v1.28.15  build module e2e/build/v1.28.15/  (the oldest line tested:
#                                  KMS v2 Status must be exactly "v2beta1"; run with kubectl v1.37.2)
# Built from the Go module proxy: each build module requires k8s.io/kubernetes and points every staging
# module at its published k8s.io/* v0.<minor>.<patch>, because k8s.io/kubernetes' own go.mod replaces them
# with ./staging/src/... and cannot be `go install`ed (e2e/build/gen-go-mod.sh writes these modules).
# Idempotent: binaries live in ~/.cache/atrest/kube-<version>/; a rerun with them present only relinks.
set -euo pipefail

KUBE_VERSION=v1.37.2
EXTRA_KUBE_APISERVERS=(v1.28.15)
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
build_root="$here/../../e2e/build"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/atrest"
bin="${ATREST_CACHE_BIN:-$cache/bin}"

# The scenario makes its CA, serving certificate and service-account keys with openssl.
if ! command -v openssl >/dev/null 2>&1; then
  apt-get install -y --no-install-recommends openssl >/dev/null 2>&1 ||
    { apt-get update >/dev/null && apt-get install -y --no-install-recommends openssl >/dev/null; }
fi
mkdir -p "$bin"

# shellcheck source=lib/go.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/go.sh"

# build VERSION MODULE-DIR  CMD... : builds k8s.io/kubernetes/cmd/<CMD> of that release into
# $cache/kube-VERSION/ (skipped when all are there already).
build() {
  local version="$1" module="$2" dest="$cache/kube-$1" missing=() c minor ldflags tmp started pkg
  shift 2
  for c in "$@"; do [[ -x "$dest/$c" ]] || missing+=("$c"); done
  if [[ ${#missing[@]} -eq 0 ]]; then
    echo "$* $version already in $dest"
    return 0
  fi
  ensure_go 60-kube-apiserver
  if ! grep -q "^require k8s.io/kubernetes $version\$" "$module/go.mod"; then
    echo "60-kube-apiserver.sh: $module/go.mod is not for $version; run e2e/build/gen-go-mod.sh $version" >&2
    exit 1
  fi
  # The version stamps `make` would set from git (kubectl version and /version report them).
  minor="${version#v1.}"
  minor="${minor%%.*}"
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  tmp="$(mktemp -d)"
  started=$(date +%s)
  echo "building ${missing[*]} $version with $(go version) on $(nproc) cores (a cold build takes minutes)"
  (
    cd "$module"
    export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
    go build -trimpath -ldflags "$ldflags" -o "$tmp/" "${missing[@]/#/k8s.io/kubernetes/cmd/}"
  ) || { rm -rf "$tmp"; exit 1; }
  rm -rf "$dest.partial"
  mkdir -p "$dest.partial"
  for c in "$@"; do
    if [[ -x "$tmp/$c" ]]; then mv "$tmp/$c" "$dest.partial/"; else cp -p "$dest/$c" "$dest.partial/"; fi
  done
  rm -rf "$tmp" "$dest"
  mv "$dest.partial" "$dest"
  echo "built ${missing[*]} $version in $(( $(date +%s) - started ))s"
}

build "$KUBE_VERSION" "$build_root" kube-apiserver kubectl
for b in kube-apiserver kubectl; do
  ln -sfn "$cache/kube-$KUBE_VERSION/$b" "$bin/$b"
done
for v in "${EXTRA_KUBE_APISERVERS[@]}"; do
  build "$v" "$build_root/$v" kube-apiserver
  ln -sfn "$cache/kube-$v/kube-apiserver" "$bin/kube-apiserver-$v"
done

"$bin/kube-apiserver" --version
"$bin/kubectl" version --client
for v in "${EXTRA_KUBE_APISERVERS[@]}"; do "$bin/kube-apiserver-$v" --version; done
