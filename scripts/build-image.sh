#!/usr/bin/env bash
# Builds atrest's container image without any registry: a root filesystem made of Debian trixie
# packages (mmdebstrap, nodejs and the libraries it links, nothing else: no shell, no package
# manager, no npm) plus the compiled plugin (dist/src only) and its production dependencies, turned
# into an image from scratch by buildah, written as an OCI archive and a docker archive (skopeo).
#
#   scripts/build-image.sh            build (or reuse) the image; prints the path of its info.json
#
# Outputs, named after package.json's version (the image reference is localhost/atrest:VERSION):
#   .build/image/atrest-VERSION.oci.tar      load with: podman load / skopeo copy oci-archive:...
#   .build/image/atrest-VERSION.docker.tar   load with: ctr -n k8s.io images import / docker load
#   .build/image/info.json                   reference, archive paths, sizes, inputs hash
# Cached under ~/.cache/atrest/image/HASH, HASH being a hash of every input (this script, src/,
# package.json, package-lock.json, tsconfig*.json, the Debian suite): a rerun with the same inputs
# only relinks the archives. Needs root (mmdebstrap, buildah) and scripts/setup/80-container-tools.sh.
#
# The image runs as uid/gid 65532 unless told otherwise, writes nothing to its root filesystem
# (read-only friendly: the socket directory and /tmp are volumes) and needs no capability.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${ATREST_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/atrest/image}"
suite=trixie
mirror="${ATREST_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
version="$(node -p "require('$root/package.json').version")"
reference="localhost/atrest:$version"

log() { echo "build-image: $*" >&2; }

for tool in mmdebstrap buildah skopeo; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    log "$tool is missing: run scripts/setup/80-container-tools.sh first"
    exit 1
  fi
done

if [[ ! -x "$root/node_modules/.bin/tsc" ]]; then
  log "node_modules/.bin/tsc is missing: run npm ci first"
  exit 1
fi

inputs_hash() {
  (
    cd "$root"
    echo "suite=$suite version=$version"
    find src -type f -name '*.ts' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
    sha256sum scripts/build-image.sh package.json package-lock.json tsconfig.json tsconfig.build.json
  ) | sha256sum | cut -c1-16
}

hash="$(inputs_hash)"
dest="$cache/$hash"
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

if [[ ! -s "$dest/info.json" ]]; then
  log "building $reference (inputs $hash)"
  started=$(date +%s)
  work="$(mktemp -d "$cache/.work.XXXXXX")"
  cleanup() {
    buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs rm --all \
      >/dev/null 2>&1 || true
    rm -rf "$work"
  }
  trap cleanup EXIT
  epoch="${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)}"
  export SOURCE_DATE_EPOCH="$epoch"

  # 1. The application: dist/src compiled from src/ (no tests, no benchmarks, no source maps) and
  #    the production dependencies from the lockfile, without install scripts.
  app="$work/app"
  mkdir -p "$app"
  "$root/node_modules/.bin/tsc" -p "$root/tsconfig.build.json" --outDir "$app/dist" \
    --sourceMap false --declaration false
  cp "$root/package.json" "$root/package-lock.json" "$app/"
  (cd "$app" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
  # pkcs11js is optional and native: ship the addon this machine built (same Node ABI as Debian's
  # node 20) when there is one; without it `--backend pkcs11` says which package is missing.
  pkcs11=false
  built="$root/node_modules/pkcs11js/build/Release/pkcs11.node"
  if [[ -d "$app/node_modules/pkcs11js" && -f "$built" ]] &&
    cmp -s "$root/node_modules/pkcs11js/package.json" "$app/node_modules/pkcs11js/package.json"; then
    mkdir -p "$app/node_modules/pkcs11js/build/Release"
    cp "$built" "$app/node_modules/pkcs11js/build/Release/"
    pkcs11=true
  else
    rm -rf "$app/node_modules/pkcs11js"
  fi
  # What a running plugin never reads.
  find "$app/node_modules" \( -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.map' \
    -o -iname '*.md' -o -name '*.ts' -o -name '.package-lock.json' \) -type f -delete
  find "$app/node_modules" -depth -type d \( -name test -o -name tests -o -name docs \) \
    -exec rm -rf {} +
  rm -rf "$app/node_modules/pkcs11js/src" "$app/node_modules/pkcs11js/build/Release/obj.target"
  rm -f "$app/package-lock.json"

  # 2. The root filesystem: nodejs from Debian, packages extracted (no maintainer scripts ran, so
  #    no shell is needed or shipped), then trimmed and completed here.
  fs="$work/rootfs"
  mmdebstrap --quiet --variant=extract --include=nodejs,ca-certificates "$suite" "$fs" "$mirror"
  (
    cd "$fs"
    # merged /usr: the loader is found through /lib64.
    for d in bin lib lib64 sbin; do
      if [[ -e "usr/$d" && ! -e "$d" ]]; then ln -s "usr/$d" "$d"; fi
    done
    rm -rf usr/share/doc usr/share/man usr/share/info usr/share/locale usr/share/lintian \
      usr/share/bug usr/share/nodejs/corepack usr/bin/corepack usr/lib/x86_64-linux-gnu/gconv \
      var/cache/* var/log/* var/lib/apt var/lib/dpkg etc/apt
    # ca-certificates' maintainer script did not run: build the bundle node reads for TLS.
    mkdir -p etc/ssl/certs
    cat usr/share/ca-certificates/mozilla/*.crt >etc/ssl/certs/ca-certificates.crt
    printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nnonroot:x:65532:65532:nonroot:/nonexistent:/usr/sbin/nologin\n' >etc/passwd
    printf 'root:x:0:\nnonroot:x:65532:\n' >etc/group
    mkdir -p tmp var/run/atrest etc/kubernetes/atrest
    chmod 1777 tmp
    cp -a "$app" app
    chmod -R go+rX,go-w app
  )
  rootfs="$work/rootfs.tar"
  tar --sort=name --mtime="@$epoch" --clamp-mtime --owner=0 --group=0 --numeric-owner \
    -C "$fs" -cf "$rootfs" .

  # 3. The image, from scratch.
  b=(buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs)
  ctr="$("${b[@]}" from scratch)"
  "${b[@]}" add "$ctr" "$rootfs" / >/dev/null
  "${b[@]}" config \
    --entrypoint '["/usr/bin/node","/app/dist/src/cli/main.js"]' --cmd '["--help"]' \
    --user 65532:65532 --workingdir /app \
    --env PATH=/usr/bin --env NODE_ENV=production \
    --label org.opencontainers.image.title=atrest \
    --label org.opencontainers.image.version="$version" \
    --label org.opencontainers.image.licenses=Apache-2.0 \
    --label org.opencontainers.image.description="atrest KMS plugin for Kubernetes encryption at rest" \
    --os linux --arch amd64 "$ctr"
  mkdir -p "$work/out"
  oci="$work/out/atrest-$version.oci.tar"
  docker="$work/out/atrest-$version.docker.tar"
  "${b[@]}" commit --quiet --timestamp "$epoch" --disable-compression=false "$ctr" \
    "oci-archive:$oci:$reference" >/dev/null
  skopeo copy --quiet "oci-archive:$oci:$reference" "docker-archive:$docker:$reference"

  size=$(stat -c %s "$rootfs")
  node -e '
    const [file, reference, version, hash, oci, docker, size, ociSize, pkcs11, secs] = process.argv.slice(1);
    require("node:fs").writeFileSync(file, JSON.stringify({
      reference, version, inputsHash: hash,
      oci, docker,
      rootfsBytes: Number(size),
      ociArchiveBytes: Number(ociSize),
      pkcs11: pkcs11 === "true",
      buildSeconds: Number(secs),
    }, null, 2) + "\n");
  ' "$work/out/info.json" "$reference" "$version" "$hash" "$dest/$(basename "$oci")" \
    "$dest/$(basename "$docker")" "$size" "$(stat -c %s "$oci")" "$pkcs11" "$(($(date +%s) - started))"
  rm -rf "$dest"
  mv "$work/out" "$dest"
  # Keep the three most recent builds.
  ls -1dt "$cache"/*/ 2>/dev/null | tail -n +4 | xargs -r rm -rf
  log "built in $(($(date +%s) - started))s: root filesystem $((size / 1024 / 1024)) MiB"
else
  log "$reference already built (inputs $hash)"
fi

out="$root/.build/image"
mkdir -p "$out"
for f in "$dest"/*.tar; do
  ln -f "$f" "$out/" 2>/dev/null || cp -f "$f" "$out/"
done
cp -f "$dest/info.json" "$out/info.json"
echo "$dest/info.json"
