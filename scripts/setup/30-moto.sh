#!/usr/bin/env bash
# setup-lane: download
# Provides `moto_server` (moto's stand-alone server, which speaks the AWS KMS API) in
# $ATREST_CACHE_BIN for the AWS KMS backend tests and benchmark. Installed from PyPI into its own
# virtual environment, keyed by version, so it neither needs nor disturbs the system's Python packages.
# Idempotent: a rerun with the environment present only refreshes the link.
set -euo pipefail

MOTO_VERSION=5.2.1
bin="${ATREST_CACHE_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/atrest/bin}"
venv="$(dirname "$bin")/moto-$MOTO_VERSION"

mkdir -p "$bin"
if [[ -x "$venv/bin/moto_server" ]]; then
  ln -sfn "$venv/bin/moto_server" "$bin/moto_server"
  echo "moto $MOTO_VERSION already in $venv"
  exit 0
fi

source "$(cd "$(dirname "$0")" && pwd)/lib/python-venv.sh"
make_venv "$venv.partial"
"$venv.partial/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
rm -rf "$venv"
mv "$venv.partial" "$venv"
# A venv's scripts name their interpreter by absolute path; after the move, call it explicitly.
sed -i "1s|^#!.*|#!$venv/bin/python|" "$venv/bin/moto_server"
ln -sfn "$venv/bin/moto_server" "$bin/moto_server"
echo "moto $MOTO_VERSION installed in $venv"
