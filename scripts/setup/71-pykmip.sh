#!/usr/bin/env bash
# setup-lane: download
# Provides `pykmip-server` (PyKMIP's KMIP server, TLS with client certificates) and a Python with
# PyKMIP's client library (`pykmip-python`, for the cross-check of our TTLV codec) in
# $ATREST_CACHE_BIN for the kmip backend tests and benchmark. Installed from PyPI into its own
# virtual environment, keyed by version. Idempotent: a rerun with the environment present only
# refreshes the links.
set -euo pipefail

PYKMIP_VERSION=0.11.0
# PyKMIP 0.11 leaves its dependencies unpinned; these are the versions it is tested with here.
PYKMIP_PINS=(cryptography==50.0.2 sqlalchemy==2.1.9)
bin="${ATREST_CACHE_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/atrest/bin}"
venv="$(dirname "$bin")/pykmip-$PYKMIP_VERSION"
here="$(cd "$(dirname "$0")" && pwd)"

# A symlink to the venv's python would lose the venv (Python looks for pyvenv.cfg beside the link).
link_python() {
  rm -f "$bin/pykmip-python"
  printf '#!/bin/sh\nexec "%s" "$@"\n' "$venv/bin/python" >"$bin/pykmip-python"
  chmod +x "$bin/pykmip-python"
}

mkdir -p "$bin"
if [[ -x "$venv/bin/pykmip-server" && -x "$venv/bin/python" ]]; then
  ln -sfn "$venv/bin/pykmip-server" "$bin/pykmip-server"
  link_python
  echo "pykmip $PYKMIP_VERSION already in $venv"
  exit 0
fi

source "$here/lib/python-venv.sh"
make_venv "$venv.partial"
"$venv.partial/bin/pip" install --quiet --disable-pip-version-check "pykmip==$PYKMIP_VERSION" "${PYKMIP_PINS[@]}"
rm -rf "$venv"
mv "$venv.partial" "$venv"
# A venv's scripts name their interpreter by absolute path; after the move, call it explicitly.
sed -i "1s|^#!.*|#!$venv/bin/python|" "$venv/bin/pykmip-server"
"$venv/bin/python" -c 'import kmip; print("pykmip", kmip.__version__)'
ln -sfn "$venv/bin/pykmip-server" "$bin/pykmip-server"
link_python
echo "pykmip $PYKMIP_VERSION installed in $venv"
