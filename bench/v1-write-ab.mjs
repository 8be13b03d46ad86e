// `node bench/v1-write-ab.mjs` (after `npx tsc -p .`): the kms v1 write path A/B behind issue 14's start-up
// finding. N Secrets (N=, default 1000) are created through kube-apiserver (4 parallel `kubectl create`)
// with a kms v1 provider (cachesize 1000, KMSv1 gate on), each plugin on its own control plane, ROUNDS=
// rounds (default 3) with the plugin order flipped each round, so machine drift hits all alike. VARIANTS=
// picks plugins: `atrest` (this build), `go` (conformance/refplugin), or any path to another atrest
// build's dist/src/cli/main.js (e.g. of main, to compare before/after). A diagnostic, not a section of
// BENCHMARKS.md: it prints one JSON line per write round.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, existsSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
const root = join(fileURLToPath(new URL('.', import.meta.url)), '..');
const { startControlPlane, CACHE_BIN } = await import(join(root, 'dist/test/api/control-plane.js'));
const N = Number(process.env.N ?? 1000), ROUNDS = Number(process.env.ROUNDS ?? 3);
const variants = (process.env.VARIANTS ?? 'atrest,go').split(',');
const cliFor = (v) => (v === 'atrest' ? join(root, 'dist/src/cli/main.js') : v);
const dir = mkdtempSync(join(tmpdir(), 'atrest-v1-write-'));
const REF = variants.includes('go')
  ? execFileSync('bash', ['-c', '. conformance/tools.sh && conformance_build_tools >&2 && echo "$REFPLUGIN"'], { cwd: root, encoding: 'utf8' }).trim()
  : '';
function run(cmd, args, input) {
  return new Promise((res, rej) => { const c = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] }); let out = '', err = ''; c.stdout.on('data', (d) => (out += d)); c.stderr.on('data', (d) => (err += d)); c.on('exit', (code) => (code === 0 ? res(out) : rej(new Error(`${cmd} ${code}: ${err.slice(-500)}`)))); c.stdin.end(input ?? ''); });
}
let setupsSoFar = 0;
async function plugin(v) {
  const name = setupsSoFar++;
  const sock = join(dir, `p${name}.sock`), kr = join(dir, `p${name}.keyring`);
  let child;
  if (v === 'go') { execFileSync(REF, ['keys', 'init', '--keyring', kr]); child = spawn(REF, ['serve', '--listen', `unix://${sock}`, '--keyring', kr, '--health-listen', 'off', '--log-level', 'error'], { stdio: 'ignore' }); }
  else { execFileSync('node', [cliFor(v), 'keys', 'init', '--keyring', kr]); child = spawn('node', [cliFor(v), 'serve', '--listen', `unix://${sock}`, '--keyring', kr, '--health-listen', 'off', '--log-level', process.env.ATREST_LOG ?? 'warn'], { stdio: ['ignore', 'ignore', process.env.ATREST_LOG ? 'pipe' : 'ignore'] }); }
  let log = ''; child.stderr?.on('data', (d) => (log += d));
  while (!existsSync(sock)) await new Promise((r) => setTimeout(r, 50));
  return { v, sock, child, log: () => log };
}
const setups = [];
for (const v of variants) {
  const p = await plugin(v);
  const cp = await startControlPlane({ featureGates: 'KMSv1=true' });
  const cfg = join(dir, `p${setups.length}-enc.yaml`);
  writeFileSync(cfg, ['apiVersion: apiserver.config.k8s.io/v1', 'kind: EncryptionConfiguration', 'resources:', '  - resources: [secrets]', '    providers:', `      - kms: {apiVersion: v1, name: bench, endpoint: "unix://${p.sock}", cachesize: 1000, timeout: 3s}`, '      - identity: {}', ''].join('\n'));
  await cp.restartApiserver(cfg);
  const kubectl = join(CACHE_BIN, 'kubectl');
  await run(kubectl, [`--kubeconfig=${cp.kubeconfig}`, 'apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: Array.from({ length: 10 }, (_, i) => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: `bench-${i}` } })) }));
  setups.push({ v, p, cp, kubectl, times: [] });
}
for (let r = 0; r < ROUNDS; r++) {
  const order = r % 2 === 0 ? setups : [...setups].reverse();
  for (const s of order) {
    const chunks = [[], [], [], []];
    for (let i = 0; i < N; i++) chunks[i % 4].push({ apiVersion: 'v1', kind: 'Secret', metadata: { name: `r${r}-${i}`, namespace: `bench-${i % 10}` }, type: 'Opaque', data: { payload: randomBytes(1024).toString('base64') } });
    const t0 = performance.now();
    await Promise.all(chunks.map((items) => run(s.kubectl, [`--kubeconfig=${s.cp.kubeconfig}`, 'create', '-o', 'name', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items }))));
    const secs = (performance.now() - t0) / 1000;
    s.times.push(secs);
    console.log(JSON.stringify({ round: r, plugin: s.v, n: N, secs: +secs.toFixed(2), load: readFileSync('/proc/loadavg', 'utf8').split(' ')[0] }));
  }
}
const sample = setups[0].cp.etcdctl(['get', '--prefix', '/registry/secrets/bench-0/', '--limit=1', '--print-value-only']);
console.log('stored prefix', sample.slice(0, 20));
for (const s of setups) { console.log(s.v, s.times.map((t) => t.toFixed(2)).join(' / ')); if (process.env.ATREST_LOG && s.v !== 'go') { const l = s.p.log(); console.log(s.v, 'connection errors', (l.match(/grpc connection error/g) ?? []).length); } }
for (const s of setups) { await s.cp.stop(); s.p.child.kill(); }
rmSync(dir, { recursive: true, force: true });
