#!/usr/bin/env bash
# setup-lane: download
# Provides SoftHSM2 (Debian's softhsm2: libsofthsm2.so and softhsm2-util) for the PKCS#11 backend
# tests, which create their own token in a temporary directory through SOFTHSM2_CONF.
# Idempotent: does nothing when the module and the tool are already installed.
set -euo pipefail

module_present() {
  for m in /usr/lib/softhsm/libsofthsm2.so /usr/lib/*/softhsm/libsofthsm2.so; do
    [[ -e "$m" ]] && return 0
  done
  return 1
}

if command -v softhsm2-util >/dev/null 2>&1 && module_present; then
  echo "softhsm2 already installed: $(softhsm2-util --version)"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y --no-install-recommends softhsm2; then
  apt-get update
  apt-get install -y --no-install-recommends softhsm2
fi
echo "softhsm2 installed: $(softhsm2-util --version)"
