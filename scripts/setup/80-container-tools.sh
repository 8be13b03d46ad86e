#!/usr/bin/env bash
# setup-lane: download
# Provides the container tooling the image build and the image test use, all from Debian:
# mmdebstrap (root filesystem from Debian packages), buildah (image from scratch), skopeo (OCI and
# docker archives), podman + runc (run the image as the static Pod would), uidmap and fuse-overlayfs
# (podman storage on hosts without native overlay), systemd-analyze (verifies the unit file), and
# promtool (alert rules), which is taken out
# of Debian's prometheus package without installing the server (no service, no user).
# Then builds the plugin's image (scripts/build-image.sh, cached by a hash of its inputs), so the
# suite's image tests find it. Idempotent: a rerun with everything present does nothing but check.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${ATREST_CACHE_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/atrest/bin}"
mkdir -p "$bin"

export DEBIAN_FRONTEND=noninteractive
apt_opts=(-y --no-install-recommends -o DPkg::Lock::Timeout=600)

tools=(mmdebstrap buildah podman runc skopeo newuidmap fuse-overlayfs systemd-analyze)
pkgs=(mmdebstrap buildah podman runc skopeo uidmap fuse-overlayfs systemd)
missing=()
for i in "${!tools[@]}"; do
  command -v "${tools[$i]}" >/dev/null 2>&1 || missing+=("${pkgs[$i]}")
done
# mmdebstrap verifies the trixie Release file with the keys in debian-archive-keyring.
[[ -e /usr/share/keyrings/debian-archive-keyring.gpg ]] || missing+=(debian-archive-keyring)
if ((${#missing[@]} > 0)); then
  echo "80-container-tools: installing ${missing[*]}"
  if ! apt-get install "${apt_opts[@]}" "${missing[@]}"; then
    apt-get update
    apt-get install "${apt_opts[@]}" "${missing[@]}"
  fi
fi

# promtool: extracted from the prometheus .deb into the cache, the server itself is not installed.
if [[ ! -x "$bin/promtool" ]]; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  if ! (cd "$tmp" && apt-get download prometheus); then
    apt-get update
    (cd "$tmp" && apt-get download prometheus)
  fi
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
  install -m 0755 "$tmp/x/usr/bin/promtool" "$bin/promtool"
fi
echo "80-container-tools: $(buildah --version), $(podman --version), $(skopeo --version), $("$bin/promtool" --version 2>&1 | head -1)"

bash "$root/scripts/build-image.sh" >/dev/null
