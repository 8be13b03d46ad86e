# Sourced by the setup scripts that install a server from PyPI: make_venv DIR creates a fresh
# virtual environment at DIR, installing python3 and python3-venv from Debian first if needed.

make_venv() {
  local dir="$1" python=""
  for p in python3 python; do
    if command -v "$p" >/dev/null 2>&1; then python="$p"; break; fi
  done
  if [[ -z "$python" ]]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends python3 python3-venv || {
      apt-get update
      apt-get install -y --no-install-recommends python3 python3-venv
    }
    python=python3
  fi
  rm -rf "$dir"
  "$python" -m venv "$dir" || {
    # Debian's python3 needs python3-venv for ensurepip.
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends python3-venv || {
      apt-get update
      apt-get install -y --no-install-recommends python3-venv
    }
    rm -rf "$dir"
    "$python" -m venv "$dir"
  }
}
