// `npm run bench -- reencrypt` (or `node dist/bench/reencrypt.bench.js --n 500`): re-encrypting every
// Secret of a real API server three ways, in the same run, on the same N Secrets (default 5,000; --n or
// ATREST_BENCH_REENCRYPT_N): the documented `kubectl get secrets -A -o json | kubectl replace -f -`,
// `atrest rewrite` (etcd) and `atrest rewrite --via-api`. Wall time and kube-apiserver CPU (/proc).
// Each method starts from all N stored by the old provider and must leave all N stored by the new one
// (checked in etcd). Writes bench/results/reencrypt.md.

import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CACHE_BIN, startControlPlane, type ControlPlane } from '../test/api/control-plane.js';
import { EtcdClient } from '../src/etcd/client.js';
import { CLI, cpuSeconds, createSecrets, flagN, load, machineLine, writeSection } from './harness.js';

const N = flagN('ATREST_BENCH_REENCRYPT_N', 5000);

const k1 = randomBytes(32).toString('base64');
const k2 = randomBytes(32).toString('base64');
const config = (first: 'aescbc' | 'aesgcm'): string => {
  const cbc = `      - aescbc: {keys: [{name: k1, secret: ${k1}}]}`;
  const gcm = `      - aesgcm: {keys: [{name: k2, secret: ${k2}}]}`;
  return [
    'apiVersion: apiserver.config.k8s.io/v1',
    'kind: EncryptionConfiguration',
    'resources:',
    '  - resources: [secrets]',
    '    providers:',
    ...(first === 'aescbc' ? [cbc, gcm] : [gcm, cbc]),
    '      - identity: {}',
    '',
  ].join('\n');
};
const PREFIX: Record<'aescbc' | 'aesgcm', string> = { aescbc: 'k8s:enc:aescbc:v1:k1:', aesgcm: 'k8s:enc:aesgcm:v1:k2:' };

interface Method {
  readonly name: string;
  readonly command: string;
  run(cp: ControlPlane, configFile: string): Promise<void>;
}

function runShell(script: string): Promise<void> {
  return import('node:child_process').then(
    ({ spawn }) =>
      new Promise<void>((resolve, reject) => {
        const child = spawn('bash', ['-o', 'pipefail', '-c', script], { stdio: ['ignore', 'ignore', 'pipe'] });
        let err = '';
        child.stderr.setEncoding('utf8').on('data', (d: string) => (err = (err + d).slice(-2000)));
        child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${script.slice(0, 80)}... exited ${code}: ${err}`))));
      }),
  );
}

const METHODS: readonly Method[] = [
  {
    name: "`kubectl get secrets -A -o json \\| kubectl replace -f -` (documented)",
    command: 'kubectl get secrets -A -o json | kubectl replace -f -',
    run: (cp) => {
      const k = `${join(CACHE_BIN, 'kubectl')} --kubeconfig=${cp.kubeconfig}`;
      return runShell(`${k} get secrets -A -o json | ${k} replace -f - > /dev/null`);
    },
  },
  {
    name: '`atrest rewrite` (etcd, default concurrency 8)',
    command: 'atrest rewrite --encryption-config FILE --endpoints URL --resource secrets',
    run: (cp, configFile) =>
      runShell(
        `${process.execPath} ${CLI} rewrite --encryption-config ${configFile} --endpoints ${cp.etcdUrl} --resource secrets -o json > /dev/null`,
      ),
  },
  {
    name: '`atrest rewrite --concurrency 32` (etcd)',
    command: 'atrest rewrite --encryption-config FILE --endpoints URL --resource secrets --concurrency 32',
    run: (cp, configFile) =>
      runShell(
        `${process.execPath} ${CLI} rewrite --encryption-config ${configFile} --endpoints ${cp.etcdUrl} --resource secrets --concurrency 32 -o json > /dev/null`,
      ),
  },
  {
    name: '`atrest rewrite --via-api` (default concurrency 8)',
    command: 'atrest rewrite --via-api --kubeconfig FILE --resource secrets',
    run: (cp) =>
      runShell(`${process.execPath} ${CLI} rewrite --via-api --kubeconfig ${cp.kubeconfig} --resource secrets -o json > /dev/null`),
  },
];

/** How many bench Secrets are stored with this prefix (read straight from etcd). */
async function countStoredAs(cp: ControlPlane, prefix: string): Promise<number> {
  const client = new EtcdClient({ endpoints: [cp.etcdUrl] });
  const want = Buffer.from(prefix, 'latin1');
  let n = 0;
  try {
    for await (const page of client.pages(Buffer.from('/registry/secrets/bench-'), Buffer.from('/registry/secrets/bench.'))) {
      for (const kv of page) if (kv.value.subarray(0, want.length).equals(want)) n++;
    }
  } finally {
    await client.close();
  }
  return n;
}

async function main(): Promise<void> {
  const loadBefore = load();
  const dir = mkdtempSync(join(tmpdir(), 'atrest-reencrypt-bench-'));
  const files = { aescbc: join(dir, 'cbc-first.yaml'), aesgcm: join(dir, 'gcm-first.yaml') };
  writeFileSync(files.aescbc, config('aescbc'));
  writeFileSync(files.aesgcm, config('aesgcm'));
  const cp = await startControlPlane({ watchCache: true });
  const rows: { name: string; command: string; secs: number; cpu: number; load: string }[] = [];
  try {
    await cp.restartApiserver(files.aescbc);
    await createSecrets(cp.kubeconfig, N);
    let current: 'aescbc' | 'aesgcm' = 'aescbc';
    if ((await countStoredAs(cp, PREFIX.aescbc)) !== N) throw new Error('the Secrets are not all stored with aescbc');
    for (const m of METHODS) {
      // Switch the write provider: everything stored is now stale, and the method must rewrite all N.
      const target: 'aescbc' | 'aesgcm' = current === 'aescbc' ? 'aesgcm' : 'aescbc';
      await cp.restartApiserver(files[target]);
      const pid = cp.apiserverPid();
      const cpu0 = cpuSeconds(pid);
      const t0 = performance.now();
      await m.run(cp, files[target]);
      const secs = (performance.now() - t0) / 1000;
      const cpu = cpuSeconds(pid) - cpu0;
      const done = await countStoredAs(cp, PREFIX[target]);
      if (done !== N) throw new Error(`${m.command}: ${done} of ${N} Secrets stored with ${target} afterwards`);
      rows.push({ name: m.name, command: m.command, secs, cpu, load: load() });
      console.log(JSON.stringify({ bench: 'reencrypt', method: m.command, n: N, secs, apiCpu: cpu, load: load() }));
      current = target;
    }
  } finally {
    await cp.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  const base = rows[0]!;
  const md = [
    '## reencrypt: re-encrypting every Secret of a real API server',
    '',
    `\`npm run bench -- reencrypt\` (bench/reencrypt.bench.ts; \`node dist/bench/reencrypt.bench.js --n ${N}\` for this N).`,
    '',
    `Machine: ${machineLine()}; one local etcd (fsync on). Load average (1/5/15 min) ${loadBefore} before the run.`,
    '',
    `N = ${N} Secrets (about 1 KiB of data each, 10 namespaces) on kube-apiserver (watch cache on). Before each`,
    'method the API server is restarted with the write provider switched (aescbc ⇄ aesgcm, both keys',
    'readable), so each method starts with all N stale and must leave all N stored by the new provider',
    '(checked in etcd after each). "API server CPU" = kube-apiserver user+system seconds (/proc/PID/stat)',
    'during the method; it includes decoding the watch events etcd sends for the rewritten keys.',
    'Reference: the documented kubectl pipeline, measured in the same run. Each `atrest` row is the whole',
    'command (process start, preflight decrypt of every value, conditional writes with read-back in etcd',
    'transactions of up to 64 keys, final verification scan, which decrypts only values not at the revision',
    'of a transaction this run read back and checked); `--concurrency 32` shows how much of the default',
    'run is waiting on etcd.',
    '',
    '| method | seconds | Secrets/s | API server CPU s | speed vs kubectl | API CPU vs kubectl | load at end |',
    '|---|---:|---:|---:|---:|---:|---|',
    ...rows.map(
      (r) =>
        `| ${r.name} | ${r.secs.toFixed(2)} | ${(N / r.secs).toFixed(0)} | ${r.cpu.toFixed(2)} | ` +
        `${(base.secs / r.secs).toFixed(2)}× | ${base.cpu > 0 ? (r.cpu / base.cpu).toFixed(2) : '–'}× | ${r.load} |`,
    ),
    '',
    '"speed vs kubectl" = kubectl pipeline seconds ÷ this method\'s seconds (above 1 = faster).',
    'Target (issue 14): `atrest rewrite` at least 10× faster than the kubectl pipeline at 5,000 Secrets.',
    '',
  ].join('\n');
  writeSection('reencrypt', md);
}

await main();
