#!/usr/bin/env bash
# Provides `vault` (HashiCorp Vault, the release pinned below) in $ATREST_CACHE_BIN for the Vault
# Transit backend tests, which run it as `vault server -dev` on 127.0.0.1. Built from the Go module
# proxy through the wrapper module in scripts/setup/vault/ (Vault's go.mod points its api/sdk
# submodules at local directories, so `go install` cannot build it directly; the wrapper resolves
# them to the published versions Vault's go.mod requires).
# Idempotent: the binary lives in a per-version directory; a rerun with it present does nothing.
set -euo pipefail

VAULT_VERSION=v1.21.4
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="${ATREST_CACHE_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/atrest/bin}"
dest="$bin/vault-$VAULT_VERSION"

mkdir -p "$bin"
if [[ -x "$dest/vault" ]]; then
  ln -sfn "vault-$VAULT_VERSION/vault" "$bin/vault"
  echo "vault $VAULT_VERSION already in $dest"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  if [[ -x /usr/local/go/bin/go ]]; then
    export PATH="/usr/local/go/bin:$PATH"
  else
    echo "35-vault.sh: Go is needed to build Vault $VAULT_VERSION and was not found" >&2
    exit 1
  fi
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "building vault $VAULT_VERSION with $(go version)"
started=$SECONDS
(
  cd "$here/vault"
  export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
  go build -trimpath -o "$tmp/vault" .
)
mkdir -p "$dest.partial"
mv "$tmp/vault" "$dest.partial/"
rm -rf "$dest"
mv "$dest.partial" "$dest"
ln -sfn "vault-$VAULT_VERSION/vault" "$bin/vault"
echo "vault $VAULT_VERSION built in $((SECONDS - started))s"
"$bin/vault" version
