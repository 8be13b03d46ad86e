# Sourced by the setup scripts that build Go code: ensure_go NAME puts a Go toolchain on PATH — the one
# already there, /usr/local/go, or GO_TOOLCHAIN fetched once from the Go module proxy (published there
# as the module golang.org/toolchain) into the atrest cache. NAME prefixes the messages.

GO_TOOLCHAIN=go1.26.8

ensure_go() {
  local name="$1" bin="${ATREST_CACHE_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/atrest/bin}" tmp
  command -v go >/dev/null 2>&1 && return 0
  if [[ -x /usr/local/go/bin/go ]]; then
    export PATH="/usr/local/go/bin:$PATH"
    return 0
  fi
  if [[ ! -x "$bin/go-$GO_TOOLCHAIN/bin/go" ]]; then
    echo "$name: Go not found; fetching $GO_TOOLCHAIN from the Go module proxy" >&2
    mkdir -p "$bin"
    tmp="$(mktemp -d)"
    curl -fsSL -o "$tmp/go.zip" "https://proxy.golang.org/golang.org/toolchain/@v/v0.0.1-$GO_TOOLCHAIN.linux-amd64.zip" &&
      (cd "$tmp" && python3 -m zipfile -e go.zip x) &&
      rm -rf "$bin/go-$GO_TOOLCHAIN" &&
      mv "$tmp/x/golang.org/toolchain@v0.0.1-$GO_TOOLCHAIN.linux-amd64" "$bin/go-$GO_TOOLCHAIN" &&
      chmod -R u+x "$bin/go-$GO_TOOLCHAIN/bin" "$bin/go-$GO_TOOLCHAIN/pkg/tool" || {
      rm -rf "$tmp"
      echo "$name: could not fetch $GO_TOOLCHAIN" >&2
      exit 1
    }
    rm -rf "$tmp"
  fi
  export PATH="$bin/go-$GO_TOOLCHAIN/bin:$PATH"
}
