#!/usr/bin/env bash
# The end-to-end scenario (`npm run test:e2e`): a real etcd, `atrest serve` and a real kube-apiserver
# (built by scripts/setup/60-kube-apiserver.sh) on 127.0.0.1, driven with kubectl, etcdctl and the
# atrest CLI from dist/ (or $ATREST_E2E_DIST). Each step prints what it checks and stops the run with
# a non-zero exit on the first failed assertion. docs/e2e.md walks through the same commands.
#   ATREST_E2E_KEEP=1   keep the work dir (logs, configs, certs) after a successful run
set -euo pipefail

E2E_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
W="$(mktemp -d /tmp/atrest-e2e.XXXXXX)"
mkdir -p "$W/pki"
SCENARIO_STARTED=$SECONDS
# shellcheck source=e2e/lib.sh
source "$E2E_ROOT/e2e/lib.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM

for b in "$KUBE_APISERVER" "$KUBECTL_BIN" "$ETCD" "$ETCDCTL_BIN"; do
  [[ -x "$b" ]] || fail "$b is missing: run scripts/setup/10-etcd.sh and scripts/setup/60-kube-apiserver.sh (npm test does)"
done
[[ -f "$DIST/src/cli/main.js" ]] || fail "$DIST/src/cli/main.js is missing: build first (npx tsc -p .)"
: > "$W/expected.txt"

# ------------------------------------------------------------------------------------------------
step "setup: etcd, keyring, plugin, certificates"
say "$("$KUBE_APISERVER" --version), kubectl $("$KUBECTL_BIN" version --client -o json | json_get 'd.clientVersion.gitVersion'), node $(node --version)"
start_etcd
atrest keys init --keyring "$W/keyring.json" >/dev/null
start_plugin
make_pki
APISERVER_PORT=$(free_port)
write_kubeconfig
SOCK="unix://$W/kms.sock"

# The KMS v1 stanza exactly as the Kubernetes 1.11 documentation wrote it.
cat > "$W/enc-v1.yaml" <<EOF
kind: EncryptionConfig
apiVersion: v1
resources:
  - resources:
    - secrets
    providers:
    - kms:
        name: atrest-v1
        endpoint: $SOCK
        cachesize: 100
    - identity: {}
EOF
# KMS v2 first; the v1 provider and identity stay readable.
cat > "$W/enc-v2.yaml" <<EOF
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources:
      - secrets
    providers:
      - kms:
          apiVersion: v2
          name: atrest
          endpoint: $SOCK
          timeout: 3s
      - kms:
          name: atrest-v1
          endpoint: $SOCK
          cachesize: 100
      - identity: {}
EOF
AESCBC_KEY="$(head -c 32 /dev/urandom | base64 -w0)"
aescbc_stanza() {
  printf '      - aescbc:\n          keys:\n            - name: key1\n              secret: %s\n' "$AESCBC_KEY"
}
kms_v2_stanza() {
  printf '      - kms:\n          apiVersion: v2\n          name: atrest\n          endpoint: %s\n          timeout: 3s\n' "$SOCK"
}
# enc_config file provider...  (providers: aescbc | kms | identity, in order)
enc_config() {
  local file="$1"
  shift
  {
    printf 'apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources:\n      - secrets\n    providers:\n'
    for p in "$@"; do
      case "$p" in
        aescbc) aescbc_stanza ;;
        kms) kms_v2_stanza ;;
        identity) printf '      - identity: {}\n' ;;
      esac
    done
  } > "$W/$file"
}
enc_config enc-aescbc-first.yaml aescbc kms identity
enc_config enc-kms-first.yaml kms aescbc identity
enc_config enc-identity-first.yaml identity kms aescbc

V1_PREFIX='k8s:enc:kms:v1:atrest-v1:'
V2_PREFIX='k8s:enc:kms:v2:atrest:'
AESCBC_PREFIX='k8s:enc:aescbc:v1:key1:'

# ------------------------------------------------------------------------------------------------
step "0. Secrets written before encryption at rest is enabled (no --encryption-provider-config)"
start_apiserver
wait_for 30 "namespace default" -- kubectl get namespace default
kubectl create namespace e2e-a >/dev/null
kubectl create namespace e2e-b >/dev/null
create_secrets e2e-a old 15
create_secrets e2e-b old 15
assert_eq 30 "$(count_stored plaintext)" "Secrets stored in plaintext"

step "1a. KMS v1 with the 1.11 documentation's EncryptionConfig"
restart_apiserver "$W/enc-v1.yaml"
kubectl create secret generic secret1 -n default --from-literal=mykey=mydata >/dev/null
kubectl label secret secret1 -n default atrest-e2e=1 >/dev/null
echo "default/secret1 $(printf mydata | base64 -w0)" >> "$W/expected.txt"
stored=$(etcdctl get /registry/secrets/default/secret1 --print-value-only | head -c ${#V1_PREFIX})
assert_eq "$V1_PREFIX" "$stored" "etcdctl get /registry/secrets/default/secret1 (prefix)"
assert_eq mydata "$(kubectl get secret secret1 -n default -o jsonpath='{.data.mykey}' | base64 -d)" \
  "kubectl get secret secret1 .data.mykey (decoded)"

step "1b. KMS v2"
restart_apiserver "$W/enc-v2.yaml"
kubectl create secret generic secret2 -n default --from-literal=mykey=mydata2 >/dev/null
kubectl label secret secret2 -n default atrest-e2e=1 >/dev/null
echo "default/secret2 $(printf mydata2 | base64 -w0)" >> "$W/expected.txt"
stored=$(etcdctl get /registry/secrets/default/secret2 --print-value-only | head -c ${#V2_PREFIX})
assert_eq "$V2_PREFIX" "$stored" "etcdctl get /registry/secrets/default/secret2 (prefix)"
assert_eq mydata2 "$(kubectl get secret secret2 -n default -o jsonpath='{.data.mykey}' | base64 -d)" \
  "kubectl get secret secret2 .data.mykey (decoded)"
assert_eq "$(plugin_key_id)" "$(stored_states | awk '$1 == "/registry/secrets/default/secret2" {print $3}')" \
  "keyID stored with secret2 = the plugin's Status key_id"
assert_eq mydata "$(kubectl get secret secret1 -n default -o jsonpath='{.data.mykey}' | base64 -d)" \
  "secret1 (KMS v1) still reads back under the v2 config"

# ------------------------------------------------------------------------------------------------
step "2. Secrets created before encryption was enabled"
assert_eq 30 "$(count_stored plaintext)" "Secrets stored in plaintext"
scan_expect enc-v2.yaml 3 plaintext=30
say "\$ kubectl get secrets -n e2e-a -o json | kubectl replace -f -"
kubectl get secrets -n e2e-a -o json | kubectl replace -f - >/dev/null
assert_eq 15 "$(count_stored plaintext)" "plaintext Secrets left after kubectl replace of e2e-a"
say "\$ atrest rewrite --encryption-config enc-v2.yaml --endpoints $ETCD_URL"
assert_exit 0 "atrest rewrite" -- atrest rewrite --encryption-config "$W/enc-v2.yaml" --endpoints "$ETCD_URL" --kubeconfig "$W/kubeconfig"
scan_expect enc-v2.yaml 0 plaintext=0 stale=0
assert_all_stored "$V2_PREFIX"
assert_all_read_back

# ------------------------------------------------------------------------------------------------
step "3a. aescbc in use"
restart_apiserver "$W/enc-aescbc-first.yaml"
say "\$ atrest rewrite --encryption-config enc-aescbc-first.yaml --endpoints $ETCD_URL"
assert_exit 0 "atrest rewrite" -- atrest rewrite --encryption-config "$W/enc-aescbc-first.yaml" --endpoints "$ETCD_URL"
scan_expect enc-aescbc-first.yaml 0 plaintext=0 stale=0
assert_all_stored "$AESCBC_PREFIX"
assert_all_read_back

step "3b. switch aescbc -> kms: reorder the providers, restart the API server, rewrite"
restart_apiserver "$W/enc-kms-first.yaml"
scan_expect enc-kms-first.yaml 0 stale="$(wc -l < "$W/stored.txt")"
say "\$ atrest rewrite --encryption-config enc-kms-first.yaml --endpoints $ETCD_URL"
assert_exit 0 "atrest rewrite" -- atrest rewrite --encryption-config "$W/enc-kms-first.yaml" --endpoints "$ETCD_URL" --kubeconfig "$W/kubeconfig"
scan_expect enc-kms-first.yaml 0 plaintext=0 stale=0
assert_all_stored "$V2_PREFIX"
assert_all_read_back

step "3c. disable encryption: identity first, restart the API server, rewrite"
restart_apiserver "$W/enc-identity-first.yaml"
scan_expect enc-identity-first.yaml 0 stale="$(wc -l < "$W/stored.txt")"
say "\$ atrest rewrite --encryption-config enc-identity-first.yaml --endpoints $ETCD_URL"
assert_exit 0 "atrest rewrite" -- atrest rewrite --encryption-config "$W/enc-identity-first.yaml" --endpoints "$ETCD_URL"
scan_expect enc-identity-first.yaml 0 plaintext="$(wc -l < "$W/stored.txt")" stale=0
assert_all_stored plaintext
assert_all_read_back

step "3d. enable kms again (kms first, restart, rewrite)"
restart_apiserver "$W/enc-kms-first.yaml"
assert_exit 0 "atrest rewrite" -- atrest rewrite --encryption-config "$W/enc-kms-first.yaml" --endpoints "$ETCD_URL" --kubeconfig "$W/kubeconfig"
scan_expect enc-kms-first.yaml 0 plaintext=0 stale=0
assert_all_stored "$V2_PREFIX"
assert_all_read_back

# ------------------------------------------------------------------------------------------------
step "4. KEK rotation with KMS v2"
k1=$(plugin_key_id)
say "plugin Status key_id before rotation: $k1"
assert_all_stored "$V2_PREFIX" "$k1"
create_secret default rot-before before-rotation
say "\$ atrest keys rotate --keyring keyring.json && kill -HUP <plugin>"
atrest keys rotate --keyring "$W/keyring.json" >/dev/null
kill -HUP "$PLUGIN_PID"
k2=$k1
for _ in $(seq 1 40); do
  k2=$(plugin_key_id)
  [[ "$k2" != "$k1" ]] && break
  sleep 0.25
done
assert_ne "$k1" "$k2" "plugin Status key_id after rotate + SIGHUP"
restart_apiserver "$W/enc-kms-first.yaml"
wait_for_apiserver_key_id atrest "$k2"
create_secret default rot-after after-rotation
assert_eq "$k2" "$(stored_states | awk '$1 == "/registry/secrets/default/rot-after" {print $3}')" \
  "keyID stored with a Secret written after the rotation"
# Expectations from what is stored now, whatever this release's API server wrote meanwhile: atrest scan
# counts a kms v2 value current only under the current key id AND in seed mode (what 1.29+ writes);
# 1.27/1.28 API servers write AES_GCM_KEY objects by default (KMSv2KDF off), so theirs are stale too.
stored_states > "$W/states.txt"
old=$(awk -v k="$k1" '$3 == k' "$W/states.txt" | wc -l)
(( old > 0 )) || fail "expected Secrets still stored under the old keyID"
say "ok: $old Secrets still stored under the old keyID $k1"
unseeded=$(awk -v k="$k2" '$3 == k && $4 != "seed"' "$W/states.txt" | wc -l)
say "$unseeded Secrets written under $k2 without seed mode (the DEK source 1.27/1.28 API servers use by default)"
assert_eq before-rotation "$(kubectl get secret rot-before -n default -o jsonpath='{.data.mykey}' | base64 -d)" \
  "a Secret under the old key reads back after an API server restart (old key still decrypts)"
scan_expect enc-kms-first.yaml 0 stale="$(( old + unseeded ))"
say "\$ etcdctl snapshot save snapshot.db   (for step 6)"
etcdctl snapshot save "$W/snapshot.db" >/dev/null 2>&1
say "\$ atrest rewrite --encryption-config enc-kms-first.yaml --endpoints $ETCD_URL"
assert_exit 0 "atrest rewrite" -- atrest rewrite --encryption-config "$W/enc-kms-first.yaml" --endpoints "$ETCD_URL" --kubeconfig "$W/kubeconfig"
assert_all_stored "$V2_PREFIX" "$k2"
scan_expect enc-kms-first.yaml 0 plaintext=0 stale=0
assert_all_read_back

# ------------------------------------------------------------------------------------------------
step "5. plugin outage: /readyz reports the kms check failing, recovers without a restart"
pid_before=$APISERVER_PID
assert_exit 0 "kubectl get --raw /readyz/kms-providers (plugin up)" -- kubectl get --raw /readyz/kms-providers
stop_plugin
say "plugin stopped; polling /readyz/kms-providers"
deadline=$(( SECONDS + 90 ))
while kubectl get --raw /readyz/kms-providers >/dev/null 2>&1; do
  (( SECONDS < deadline )) || fail "/readyz/kms-providers still ok 90s after the plugin stopped"
  sleep 1
done
code=0
kubectl get --raw '/readyz?verbose' >"$W/readyz.txt" 2>&1 || code=$?
(( code != 0 )) || fail "/readyz is ok while the kms check fails"
grep -q '\[-\]kms-providers failed' "$W/readyz.txt" || { cat "$W/readyz.txt" >&2; fail "/readyz?verbose does not list kms-providers as failed"; }
say "ok: /readyz fails with [-]kms-providers failed"
start_plugin
deadline=$(( SECONDS + 90 ))
until kubectl get --raw /readyz/kms-providers >/dev/null 2>&1; do
  (( SECONDS < deadline )) || fail "/readyz/kms-providers not ok 90s after the plugin came back"
  sleep 1
done
assert_eq "$pid_before" "$APISERVER_PID" "kube-apiserver pid (no restart)"
kill -0 "$APISERVER_PID" || fail "kube-apiserver is gone"
assert_exit 0 "kubectl get --raw /readyz" -- kubectl get --raw /readyz
create_secret default after-outage written-after-outage
assert_eq written-after-outage "$(kubectl get secret after-outage -n default -o jsonpath='{.data.mykey}' | base64 -d)" \
  "a Secret written after the outage reads back"

# ------------------------------------------------------------------------------------------------
step "6. atrest decrypt from etcd and from an etcd snapshot"
for name in secret1 rot-before; do
  want=$(kubectl get secret "$name" -n default -o jsonpath='{.data.mykey}')
  say "\$ atrest decrypt --encryption-config enc-kms-first.yaml --endpoints $ETCD_URL --etcd-key /registry/secrets/default/$name -o json --show-secret-data"
  assert_exit 0 "atrest decrypt $name (etcd)" -- atrest decrypt --encryption-config "$W/enc-kms-first.yaml" \
    --endpoints "$ETCD_URL" --etcd-key "/registry/secrets/default/$name" -o json --show-secret-data
  assert_eq "$want" "$(decrypted_value < "$W/last.out")" "atrest decrypt $name from etcd = kubectl"
  say "\$ atrest decrypt ... --snapshot snapshot.db"
  assert_exit 0 "atrest decrypt $name (snapshot)" -- atrest decrypt --encryption-config "$W/enc-kms-first.yaml" \
    --snapshot "$W/snapshot.db" --etcd-key "/registry/secrets/default/$name" -o json --show-secret-data
  assert_eq "$want" "$(decrypted_value < "$W/last.out")" "atrest decrypt $name from the snapshot = kubectl"
done

step "6b. retire the old KEK: etcd still reads back, the snapshot's old values no longer decrypt"
say "\$ atrest scan --encryption-config enc-kms-first.yaml --expect-key $k2 --kubeconfig kubeconfig"
assert_exit 0 "atrest scan --expect-key (everything under the new key_id, the API server writes with it)" -- \
  atrest scan --encryption-config "$W/enc-kms-first.yaml" --endpoints "$ETCD_URL" --expect-key "$k2" --kubeconfig "$W/kubeconfig"
say "\$ atrest keys retire $k1 --keyring keyring.json --check-etcd && kill -HUP <plugin>"
assert_exit 0 "atrest keys retire --check-etcd" -- \
  atrest keys retire "$k1" --keyring "$W/keyring.json" --check-etcd --endpoints "$ETCD_URL"
kill -HUP "$PLUGIN_PID"
sleep 1
assert_eq "$k2" "$(plugin_key_id)" "plugin Status key_id after retiring the old key"
restart_apiserver "$W/enc-kms-first.yaml"
assert_all_read_back
assert_fails "atrest decrypt rot-before from the snapshot (stored under the retired key)" -- \
  atrest decrypt --encryption-config "$W/enc-kms-first.yaml" --snapshot "$W/snapshot.db" \
  --etcd-key /registry/secrets/default/rot-before -o json --show-secret-data

# ------------------------------------------------------------------------------------------------
step "7. atrest rewrite --via-api with concurrent kubectl writers"
restart_apiserver "$W/enc-identity-first.yaml"
kubectl create namespace e2e-api >/dev/null
for batch in 0 1 2 3; do create_secrets e2e-api "api$batch" 60; done
assert_eq 240 "$(count_stored plaintext)" "plaintext Secrets before --via-api"
restart_apiserver "$W/enc-kms-first.yaml"
start_writers
say "\$ atrest rewrite --via-api --kubeconfig kubeconfig --resource secrets --concurrency 8 -o json"
assert_exit 0 "atrest rewrite --via-api" -- \
  atrest rewrite --via-api --kubeconfig "$W/kubeconfig" --resource secrets --concurrency 8 -o json
stop_writers
say "summary: $(json_get 'd' < "$W/last.out")"
assert_eq 0 "$(json_get 'd.failed.length' < "$W/last.out")" "failed patches"
assert_eq "$(json_get 'd.listed' < "$W/last.out")" "$(json_get 'd.patched + d.gone' < "$W/last.out")" \
  "patched + gone (deleted by a writer meanwhile) = listed"
# writers that annotated a Secret first re-encrypted it themselves, so rewritten ≤ 240
say "ok: $(json_get 'd.rewritten' < "$W/last.out") objects rewritten by the patches"
assert_all_stored "$V2_PREFIX"
assert_all_read_back

step "done: all steps passed in $(( SECONDS - SCENARIO_STARTED ))s"
