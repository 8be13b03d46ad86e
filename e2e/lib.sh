# shellcheck shell=bash
# Control plane and assertions for e2e/run.sh (sourced): etcd, the KMS plugin (`atrest serve`) and a real
# kube-apiserver on 127.0.0.1 with random free ports, in one temp dir; every started process is killed
# by cleanup. Assertions print what they compared and exit non-zero on the first mismatch.

: "${E2E_ROOT:?}" "${W:?}"
BIN="${ATREST_CACHE_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/atrest/bin}"
# ATREST_E2E_KUBE_APISERVER: another kube-apiserver binary (a path, or a file name in $BIN, e.g.
# kube-apiserver-v1.28.15 from scripts/setup/60-kube-apiserver.sh); kubectl stays the one in $BIN.
KUBE_APISERVER="${ATREST_E2E_KUBE_APISERVER:-kube-apiserver}"
[[ "$KUBE_APISERVER" == */* ]] || KUBE_APISERVER="$BIN/$KUBE_APISERVER"
KUBECTL_BIN="$BIN/kubectl"
ETCD="$BIN/etcd"
ETCDCTL_BIN="$BIN/etcdctl"
DIST="${ATREST_E2E_DIST:-$E2E_ROOT/dist}"
export ATREST_E2E_DIST="$DIST"
ATREST_CLI=(node "$DIST/src/cli/main.js")
INSPECT=(node "$E2E_ROOT/e2e/lib/inspect.mjs")

ETCD_PID='' APISERVER_PID='' PLUGIN_PID=''
BG_PIDS=()
STEP_STARTED=$SECONDS

# ------------------------------------------------------------------------------------------- output

step() {
  echo
  echo "=== [$(( SECONDS - SCENARIO_STARTED ))s] $*"
  STEP_STARTED=$SECONDS
}
say() { echo "    $*"; }
fail() {
  echo "FAIL: $*" >&2
  for log in apiserver plugin etcd; do
    if [[ -s "$W/$log.log" ]]; then
      echo "--- last lines of $log.log ---" >&2
      tail -n 15 "$W/$log.log" >&2
    fi
  done
  exit 1
}
assert_eq() { # expected actual what
  if [[ "$1" != "$2" ]]; then fail "$3: expected '$1', got '$2'"; fi
  say "ok: $3 = '$2'"
}
assert_ne() { # unexpected actual what
  if [[ "$1" == "$2" ]]; then fail "$3: expected something other than '$1'"; fi
  say "ok: $3 = '$2' (not '$1')"
}
assert_prefix() { # prefix actual what
  if [[ "$2" != "$1"* ]]; then fail "$3: expected a value starting with '$1', got '${2:0:40}...'"; fi
  say "ok: $3 starts with '$1'"
}
assert_exit() { # expected-code what -- command...
  local expected="$1" what="$2" code=0
  shift 3
  "$@" >"$W/last.out" 2>"$W/last.err" || code=$?
  if [[ "$code" != "$expected" ]]; then
    echo "--- stdout ---" >&2; tail -n 20 "$W/last.out" >&2
    echo "--- stderr ---" >&2; tail -n 20 "$W/last.err" >&2
    fail "$what: expected exit $expected, got $code"
  fi
  say "ok: $what exits $code"
}

assert_fails() { # what -- command...   (any non-zero exit)
  local what="$1" code=0
  shift 2
  "$@" >"$W/last.out" 2>"$W/last.err" || code=$?
  (( code != 0 )) || fail "$what: expected a failure, got exit 0"
  say "ok: $what fails (exit $code: $(head -c 160 "$W/last.err" | tr '\n' ' '))"
}

# ------------------------------------------------------------------------------------------- tools

free_port() {
  node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}
kubectl() { "$KUBECTL_BIN" --kubeconfig "$W/kubeconfig" "$@"; }
etcdctl() { "$ETCDCTL_BIN" --endpoints "$ETCD_URL" "$@"; }
atrest() { "${ATREST_CLI[@]}" "$@"; }
json_get() { # JS expression over `d` (the parsed stdin JSON), printed
  node -e 'let s="";process.stdin.on("data",c=>s+=c).on("end",()=>{const d=JSON.parse(s);const v=('"$1"');process.stdout.write((typeof v==="string"?v:JSON.stringify(v))+"\n")})'
}
wait_for() { # seconds what -- command...
  local deadline=$(( SECONDS + $1 )) what="$2"
  shift 3
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS >= deadline )); then fail "timed out after ${deadline}s waiting for $what"; fi
    sleep 0.5
  done
}
stop_pid() { # pid [signal]
  local pid="$1" sig="${2:-TERM}"
  [[ -n "$pid" ]] || return 0
  kill -"$sig" "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local code=$?
  for pid in "${BG_PIDS[@]}"; do stop_pid "$pid"; done
  stop_pid "$APISERVER_PID"
  stop_pid "$PLUGIN_PID"
  stop_pid "$ETCD_PID"
  if [[ $code -ne 0 || -n "${ATREST_E2E_KEEP:-}" ]]; then
    echo "e2e: work dir kept for inspection: $W"
  else
    rm -rf "$W"
  fi
  exit $code
}

# ------------------------------------------------------------------------------------------- pki

make_pki() {
  (
    cd "$W/pki"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj '/CN=atrest-e2e-ca' \
      -keyout ca.key -out ca.crt 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj '/CN=kube-apiserver' \
      -keyout apiserver.key -out apiserver.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n' > san.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
      -extfile san.ext -out apiserver.crt 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
  TOKEN="$(node -e 'console.log(require("crypto").randomBytes(24).toString("hex"))')"
  # static token for kubectl: token,user,uid,"groups"
  printf '%s,e2e-admin,e2e-admin-uid,"system:masters"\n' "$TOKEN" > "$W/pki/tokens.csv"
  chmod 600 "$W/pki/tokens.csv"
}

write_kubeconfig() {
  cat > "$W/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $W/pki/ca.crt
users:
- name: e2e-admin
  user:
    token: $TOKEN
contexts:
- name: e2e
  context: {cluster: e2e, user: e2e-admin, namespace: default}
current-context: e2e
EOF
  chmod 600 "$W/kubeconfig"
}

# ------------------------------------------------------------------------------------------- etcd

start_etcd() {
  local client_port peer_port
  client_port=$(free_port)
  peer_port=$(free_port)
  ETCD_URL="http://127.0.0.1:$client_port"
  "$ETCD" --name e2e --data-dir "$W/etcd" \
    --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "e2e=http://127.0.0.1:$peer_port" \
    --log-level warn >"$W/etcd.log" 2>&1 &
  ETCD_PID=$!
  wait_for 30 "etcd at $ETCD_URL" -- etcdctl endpoint health
  say "etcd $("$ETCD" --version | head -1 | awk '{print $3}') on $ETCD_URL (pid $ETCD_PID)"
}

# ------------------------------------------------------------------------------------------- plugin

start_plugin() {
  "${ATREST_CLI[@]}" serve --listen "unix://$W/kms.sock" --keyring "$W/keyring.json" \
    --health-listen off >>"$W/plugin.log" 2>&1 &
  PLUGIN_PID=$!
  wait_for 30 "the plugin socket $W/kms.sock" -- "${INSPECT[@]}" status "unix://$W/kms.sock"
  say "atrest serve on unix://$W/kms.sock (pid $PLUGIN_PID)"
}
stop_plugin() {
  stop_pid "$PLUGIN_PID" TERM
  PLUGIN_PID=''
}
plugin_key_id() {
  "${INSPECT[@]}" status "unix://$W/kms.sock" | json_get 'd.key_id'
}

# ------------------------------------------------------------------------------------------- apiserver

# start_apiserver [encryption-config-file]   (no file: encryption at rest disabled)
start_apiserver() {
  local config="${1:-}" args=() shown=none
  if [[ -n "$config" ]]; then
    args+=("--encryption-provider-config=$config")
    shown="${config##*/}"
  fi
  APISERVER_PORT="${APISERVER_PORT:-$(free_port)}"
  echo "--- start $(date -u +%T) config=${config:-none}" >>"$W/apiserver.log"
  "$KUBE_APISERVER" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --endpoint-reconciler-type=none \
    --secure-port="$APISERVER_PORT" \
    --tls-cert-file="$W/pki/apiserver.crt" --tls-private-key-file="$W/pki/apiserver.key" \
    --token-auth-file="$W/pki/tokens.csv" --authorization-mode=RBAC --anonymous-auth=false \
    --service-account-issuer=https://kubernetes.default.svc \
    --service-account-key-file="$W/pki/sa.pub" --service-account-signing-key-file="$W/pki/sa.key" \
    --service-cluster-ip-range=10.96.0.0/16 \
    --etcd-servers="$ETCD_URL" \
    --feature-gates=KMSv1=true \
    --enable-priority-and-fairness=false --profiling=false \
    "${args[@]}" >>"$W/apiserver.log" 2>&1 &
  APISERVER_PID=$!
  local deadline=$(( SECONDS + 120 ))
  until kubectl get --raw /readyz >/dev/null 2>&1; do
    kill -0 "$APISERVER_PID" 2>/dev/null || fail "kube-apiserver exited during startup"
    (( SECONDS < deadline )) || fail "kube-apiserver not ready after 120s"
    sleep 0.5
  done
  say "kube-apiserver ready on https://127.0.0.1:$APISERVER_PORT (pid $APISERVER_PID, config $shown, $(( SECONDS - deadline + 120 ))s)"
}
stop_apiserver() {
  stop_pid "$APISERVER_PID" TERM
  APISERVER_PID=''
}
restart_apiserver() {
  stop_apiserver
  start_apiserver "$@"
}

# apiserver_status_key_hash provider: the key_id_hash ("sha256:<hex>") of the newest KMS v2 Status answer
# the running API server accepted for that provider, from its own metrics (1.27+ expose
# apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds); empty if none yet.
apiserver_status_key_hash() {
  kubectl get --raw /metrics 2>/dev/null | awk -v p="provider_name=\"$1\"" '
    /^apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds[{]/ && index($0, p) {
      if (match($0, /key_id_hash="[^"]*"/) && (best == "" || $NF + 0 >= when)) {
        best = substr($0, RSTART + 13, RLENGTH - 14); when = $NF + 0
      }
    }
    END { print best }'
}
key_id_hash() { printf 'sha256:%s\n' "$(printf '%s' "$1" | sha256sum | cut -d' ' -f1)"; }
# wait_for_apiserver_key_id provider keyID: until the API server reports it uses that key id
wait_for_apiserver_key_id() {
  local want got='' deadline=$(( SECONDS + 90 ))
  want=$(key_id_hash "$2")
  until [[ "$got" == "$want" ]]; do
    (( SECONDS < deadline )) || fail "kube-apiserver does not report key id $2 ($want) for provider $1 after 90s (last: '${got:-none}')"
    sleep 0.5
    got=$(apiserver_status_key_hash "$1")
  done
  say "ok: kube-apiserver reports KMS v2 key id $2 for provider $1 (metrics: key_id_hash $want)"
}

# ------------------------------------------------------------------------------------------- etcd views

# stored_states [prefix]: "<key> <prefix|plaintext> <keyID|-> <seed|key|->" per Secret in etcd (the last
# column: the kms v2 DEK source type, "key" being what 1.27/1.28 API servers write by default)
stored_states() {
  etcdctl get --prefix "${1:-/registry/secrets/}" -w json | "${INSPECT[@]}" stored
}
# assert_all_stored <expected-prefix|plaintext> [keyID]: every Secret in etcd is stored that way
assert_all_stored() {
  local want="$1" want_key="${2:-}" total bad
  stored_states > "$W/stored.txt"
  total=$(wc -l < "$W/stored.txt")
  (( total > 0 )) || fail "no Secrets found in etcd"
  bad=$(awk -v p="$want" -v k="$want_key" '$2 != p || (k != "" && $3 != k)' "$W/stored.txt" | wc -l)
  if (( bad > 0 )); then
    awk -v p="$want" -v k="$want_key" '$2 != p || (k != "" && $3 != k)' "$W/stored.txt" | head -5 >&2
    fail "$bad of $total Secrets in etcd are not stored as $want${want_key:+ with keyID $want_key}"
  fi
  say "ok: all $total Secrets in etcd are stored as $want${want_key:+ (keyID $want_key)}"
}
count_stored() { # prefix -> number of Secrets stored with it
  stored_states | awk -v p="$1" '$2 == p' | wc -l
}

# every Secret the scenario created reads back through the API with its value
assert_all_read_back() {
  local expected got
  expected=$(sort "$W/expected.txt")
  got=$(kubectl get secrets -A -l atrest-e2e=1 \
    -o go-template='{{range .items}}{{.metadata.namespace}}/{{.metadata.name}} {{index .data "mykey"}}{{"\n"}}{{end}}' | sort)
  if [[ "$expected" != "$got" ]]; then
    diff <(echo "$expected") <(echo "$got") | head -10 >&2
    fail "Secrets read back through kubectl differ from what was written"
  fi
  say "ok: all $(wc -l < "$W/expected.txt") Secrets read back through kubectl with their values"
}
# create_secret ns name value: kubectl create + remember the expected value
create_secret() {
  kubectl create secret generic "$2" -n "$1" --from-literal=mykey="$3" >/dev/null
  kubectl label secret "$2" -n "$1" atrest-e2e=1 >/dev/null
  echo "$1/$2 $(printf '%s' "$3" | base64 -w0)" >> "$W/expected.txt"
}
# create_secrets ns prefix count: many at once through one kubectl apply
create_secrets() {
  local ns="$1" prefix="$2" count="$3" i
  {
    echo '{"apiVersion":"v1","kind":"List","items":['
    for (( i = 0; i < count; i++ )); do
      local v
      v=$(printf 'value-%s-%d' "$prefix" "$i" | base64 -w0)
      (( i > 0 )) && echo ','
      printf '{"apiVersion":"v1","kind":"Secret","metadata":{"name":"%s-%d","namespace":"%s","labels":{"atrest-e2e":"1"}},"data":{"mykey":"%s"}}' \
        "$prefix" "$i" "$ns" "$v"
      echo "$ns/$prefix-$i $v" >> "$W/expected.txt"
    done
    echo ']}'
  } > "$W/batch.json"
  kubectl create -f "$W/batch.json" >/dev/null
}

# ------------------------------------------------------------------------------------------- atrest views

# scan_expect config-file exit-code [total=n ...]: `atrest scan -o json` with that config exits with
# exit-code (3: plaintext where encryption is required, or undecryptable values) and reports these totals
# (keys, plaintext, encrypted, current, stale, unknown, undecryptable).
scan_expect() {
  local config="$1" code="$2" kv
  shift 2
  say "\$ atrest scan --encryption-config $config --endpoints $ETCD_URL -o json"
  assert_exit "$code" "atrest scan" -- atrest scan --encryption-config "$W/$config" --endpoints "$ETCD_URL" -o json
  for kv in "$@"; do
    assert_eq "${kv#*=}" "$(json_get "d.totals.${kv%%=*}" < "$W/last.out")" "atrest scan: totals.${kv%%=*}"
  done
}

# the Secret's .data.mykey (base64) from `atrest decrypt -o json --show-secret-data`
decrypted_value() { json_get 'd.object.data.mykey'; }

# background kubectl writers while the rewrite runs: annotate the listed Secrets, create and delete others
start_writers() {
  local i
  for i in 0 1; do
    (
      trap - EXIT INT TERM # the writer must not run the scenario's cleanup
      set +e
      n=0
      while :; do
        kubectl annotate secret "api$i-$(( n % 60 ))" -n e2e-api "writer=$n" --overwrite >/dev/null 2>&1 || true
        kubectl create secret generic "w$i-$n" -n e2e-api --from-literal=k="w$n" >/dev/null 2>&1 || true
        (( n >= 3 )) && kubectl delete secret "w$i-$(( n - 3 ))" -n e2e-api --wait=false >/dev/null 2>&1 || true
        n=$(( n + 1 ))
      done
    ) &
    BG_PIDS+=($!)
  done
  say "2 kubectl writers running (annotate, create, delete in e2e-api)"
}
stop_writers() {
  for pid in "${BG_PIDS[@]}"; do stop_pid "$pid"; done
  BG_PIDS=()
}
