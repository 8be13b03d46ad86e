#!/usr/bin/env bash
# The conformance suite of `npm test`: runs every Go harness module's tests against the plugin.
#   apiserver-v0.37  KMS clients, transformers and health probes of k8s.io/apiserver v0.37.2
#   apiserver-v0.30  the same scenarios with k8s.io/apiserver v0.30.14 (different :authority on the wire)
#   apiserver-v0.28  the same scenarios with k8s.io/apiserver v0.28.15 (kube-apiserver 1.27/1.28: Status
#                    version must be exactly "v2beta1"; raw socket path as :authority)
#   oldclient        a v1beta1 client on google.golang.org/grpc v1.27.1 (raw socket path as :authority)
#   h2spec           h2spec against the plugin and the grpc-go reference plugin (conformance/h2spec.mjs)
# The plugin defaults to `node dist/src/cli/main.js` (built by `npx tsc -p .`); set ATREST_CMD to test
# another build or the reference plugin. Extra arguments go to `go test` (e.g. -run TestKeyRotation);
# with extra arguments the h2spec step is left out (it takes about a minute and has no filter).
# Exits non-zero if any step fails; every step runs regardless.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
  export PATH="/usr/local/go/bin:$PATH"
fi
command -v go >/dev/null 2>&1 || { echo "conformance: Go not found; run scripts/setup/50-go-conformance.sh" >&2; exit 1; }

if [ -z "${ATREST_CMD:-}" ]; then
  main="$root/dist/src/cli/main.js"
  [ -f "$main" ] || { echo "conformance: $main missing; build with npx tsc -p . first" >&2; exit 1; }
  ATREST_CMD="node $main"
fi
export ATREST_CMD
export GOFLAGS="${GOFLAGS:--mod=readonly}"

failed=()
for m in apiserver-v0.37 apiserver-v0.30 apiserver-v0.28 oldclient; do
  echo "--- conformance/$m (plugin: $ATREST_CMD)"
  if ! (cd "$root/conformance/$m" && go test -count=1 -timeout 10m -v "$@" ./...); then
    failed+=("$m")
  fi
done
if [ "$#" -eq 0 ]; then
  echo "--- conformance/h2spec.mjs (plugin: $ATREST_CMD; reference: grpc-go)"
  # shellcheck source=tools.sh
  . "$root/conformance/tools.sh"
  if ! conformance_build_tools || ! REFPLUGIN="$REFPLUGIN" node "$root/conformance/h2spec.mjs"; then
    failed+=("h2spec")
  fi
fi
if [ "${#failed[@]}" -gt 0 ]; then
  echo "conformance: FAILED in ${failed[*]}"
  exit 1
fi
echo "conformance: all steps passed"
