// atrest vs kube-apiserver's own transformers (k8s.io/apiserver in the Go oracle, built by
// scripts/setup/40-go-oracle.sh), values per second per provider at 1 KiB and 64 KiB, both directions,
// measured in the same run from the same EncryptionConfiguration. Each side loops in-process (the oracle's
// "bench" op runs its loop inside Go), one value at a time. kms providers go through the same running
// atrest plugin (`atrest serve`) on both sides. Writes bench/results/oracle.md.
//
//   npm run bench -- oracle                 (ATREST_BENCH_MS=<ms per measurement>, default 500)

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildTransformers, parseEncryptionConfiguration, type BuildDeps } from '../src/config/index.js';
import type { Transformer } from '../src/transformers/transformer.js';
import { oracleBinary, startOracle, type Oracle } from '../test/parity/oracle.js';

const SIZES = [1024, 64 * 1024];
const DIRECTIONS = ['toStorage', 'fromStorage'] as const;
/** Time per measurement; each cell is measured ROUNDS times per side, alternating, best kept. */
const durationMs = Number(process.env['ATREST_BENCH_MS'] ?? 500);
const ROUNDS = 3;

interface Case {
  readonly provider: string;
  readonly gr: { group: string; resource: string };
  readonly etcdKey: string;
}

const LOCAL: readonly Case[] = [
  { provider: 'identity', gr: { group: '', resource: 'pods' }, etcdKey: '/registry/pods/default/p' },
  { provider: 'aescbc', gr: { group: '', resource: 'secrets' }, etcdKey: '/registry/secrets/default/s' },
  { provider: 'aesgcm', gr: { group: '', resource: 'configmaps' }, etcdKey: '/registry/configmaps/default/c' },
  { provider: 'secretbox', gr: { group: 'awesome.bears.example', resource: 'pandas' }, etcdKey: '/registry/awesome.bears.example/pandas/ns/p' },
];
const KMS: readonly Case[] = [
  { provider: 'kms-v1', gr: { group: 'batch', resource: 'jobs' }, etcdKey: '/registry/jobs/default/j' },
  { provider: 'kms-v2', gr: { group: 'apps', resource: 'deployments' }, etcdKey: '/registry/deployments/default/d' },
];

function configText(socket: string | undefined): string {
  const k = (n: number) => randomBytes(n).toString('base64');
  const kms = socket
    ? `  - resources: [jobs.batch]
    providers:
      - kms: {apiVersion: v1, name: bench1, endpoint: "unix://${socket}", cachesize: 1000}
  - resources: [deployments.apps]
    providers:
      - kms: {apiVersion: v2, name: bench2, endpoint: "unix://${socket}"}
`
    : '';
  return `apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [pods]
    providers: [{identity: {}}]
  - resources: [secrets]
    providers: [{aescbc: {keys: [{name: key1, secret: "${k(32)}"}]}}]
  - resources: [configmaps]
    providers: [{aesgcm: {keys: [{name: key1, secret: "${k(32)}"}]}}]
  - resources: [pandas.awesome.bears.example]
    providers: [{secretbox: {keys: [{name: key1, secret: "${k(32)}"}]}}]
${kms}`;
}

async function measureAtrest(t: Transformer, c: Case, size: number, direction: (typeof DIRECTIONS)[number]): Promise<number> {
  const plain = randomBytes(size);
  const ctx = { authenticatedData: Buffer.from(c.etcdKey) };
  const stored = await t.transformToStorage(plain, ctx);
  const fn =
    direction === 'toStorage' ? () => t.transformToStorage(plain, ctx) : () => t.transformFromStorage(stored, ctx);
  const warmUntil = performance.now() + Math.min(200, durationMs / 5);
  while (performance.now() < warmUntil) await fn();
  let n = 0;
  const start = performance.now();
  let now = start;
  while (now < start + durationMs) {
    for (let i = 0; i < 16; i++) await fn();
    n += 16;
    now = performance.now();
  }
  return (n * 1000) / (now - start);
}

/** The floor for aesgcm in Node: bare node:crypto AES-256-GCM seal/open, no transformer around it. */
async function measureBareGcm(size: number, direction: (typeof DIRECTIONS)[number]): Promise<number> {
  const key = randomBytes(32);
  const aad = Buffer.from('/registry/configmaps/default/c');
  const plain = randomBytes(size);
  const seal = (): Buffer => {
    const nonce = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', key, nonce);
    c.setAAD(aad);
    return Buffer.concat([nonce, c.update(plain), c.final(), c.getAuthTag()]);
  };
  const sealed = seal();
  const open = (): Buffer => {
    const d = createDecipheriv('aes-256-gcm', key, sealed.subarray(0, 12));
    d.setAAD(aad);
    d.setAuthTag(sealed.subarray(sealed.length - 16));
    return Buffer.concat([d.update(sealed.subarray(12, sealed.length - 16)), d.final()]);
  };
  const fn = direction === 'toStorage' ? seal : open;
  const warmUntil = performance.now() + Math.min(200, durationMs / 5);
  while (performance.now() < warmUntil) fn();
  let n = 0;
  const start = performance.now();
  let now = start;
  while (now < start + durationMs) {
    for (let i = 0; i < 16; i++) fn();
    n += 16;
    now = performance.now();
  }
  return (n * 1000) / (now - start);
}

async function measureGo(oracle: Oracle, c: Case, size: number, direction: (typeof DIRECTIONS)[number]): Promise<number> {
  const req = { ...c.gr, key: c.etcdKey, size, direction };
  const probe = await oracle.bench({ ...req, n: 50 });
  const perValueNs = Math.max(probe.ns / probe.n, 1);
  await oracle.bench({ ...req, n: Math.max(10, Math.round((Math.min(200, durationMs / 5) * 1e6) / perValueNs)) }); // warm-up
  const n = Math.max(50, Math.round((durationMs * 1e6) / perValueNs));
  const r = await oracle.bench({ ...req, n });
  return (r.n * 1e9) / r.ns;
}

interface Plugin {
  readonly socket: string;
  stop(): Promise<void>;
}

/** `atrest serve` on a fresh keyring, or the reason it cannot run. */
async function startPlugin(dir: string): Promise<Plugin | string> {
  const main = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const keyring = join(dir, 'keyring.json');
  const socket = join(dir, 'kms.sock');
  const init = spawnSync(process.execPath, [main, 'keys', 'init', '--keyring', keyring], { encoding: 'utf8' });
  if (init.status !== 0) return `atrest keys init failed: ${init.stderr.trim().split('\n').pop() ?? ''}`;
  const child: ChildProcess = spawn(
    process.execPath,
    [main, 'serve', '--listen', `unix://${socket}`, '--keyring', keyring, '--health-listen', 'off'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
  const deadline = Date.now() + 10_000;
  while (!existsSync(socket)) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      return `atrest serve did not create its socket: ${stderr.trim().split('\n').pop() ?? ''}`;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    socket,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
        setTimeout(() => child.kill('SIGKILL'), 5000).unref();
      }),
  };
}

async function kmsDeps(): Promise<BuildDeps | string> {
  const specifier = '../src/kms-client/index.js';
  try {
    const mod = (await import(specifier)) as {
      createKmsV1Client(o: { endpoint: string; timeoutMs: number }): never;
      createKmsV2Client(o: { endpoint: string; timeoutMs: number }): never;
    };
    return {
      dialKmsV1: (endpoint, timeoutMs) => mod.createKmsV1Client({ endpoint, timeoutMs }),
      dialKmsV2: (endpoint, timeoutMs) => mod.createKmsV2Client({ endpoint, timeoutMs }),
    };
  } catch (err) {
    return `src/kms-client is not available: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`;
  }
}

async function main(): Promise<void> {
  oracleBinary(); // fails early with the setup hint
  const dir = mkdtempSync(join(tmpdir(), 'atrest-oracle-bench-'));
  let plugin: Plugin | undefined;
  let oracle: Oracle | undefined;
  const notes: string[] = [];
  try {
    let deps: BuildDeps = {};
    const d = await kmsDeps();
    if (typeof d === 'string') notes.push(`kms providers not measured: ${d}`);
    else {
      const p = await startPlugin(dir);
      if (typeof p === 'string') notes.push(`kms providers not measured: ${p}`);
      else {
        plugin = p;
        deps = d;
      }
    }
    const text = configText(plugin?.socket);
    const file = join(dir, 'enc.yaml');
    writeFileSync(file, text);
    oracle = startOracle({ kmsV1: true });
    const loaded = await oracle.load(file, { keep: true });
    if (!loaded.ok) throw new Error(`the oracle refused the bench config: ${loaded.error}`);
    const ours = buildTransformers(parseEncryptionConfiguration(text, file), deps);
    for (const k of ours.kmsProviders) {
      if ('refreshStatus' in k.transformer) {
        const h = await k.transformer.refreshStatus();
        if (!h.ok) throw new Error(`kms v2 Status failed: ${h.error?.message}`);
      }
    }
    const cases = plugin ? [...LOCAL, ...KMS] : LOCAL;
    const loadBefore = loadavg()[0]!;
    const rows: string[] = [];
    const json: object[] = [];
    for (const c of cases) {
      for (const size of SIZES) {
        for (const direction of DIRECTIONS) {
          // Best of ROUNDS alternating rounds: on a shared, noisy machine the best round is the one
          // least disturbed by other work, for both sides alike.
          let go = 0;
          let ts = 0;
          let bare: number | undefined;
          for (let round = 0; round < ROUNDS; round++) {
            go = Math.max(go, await measureGo(oracle, c, size, direction));
            ts = Math.max(ts, await measureAtrest(ours.transformerFor(c.gr), c, size, direction));
            if (c.provider === 'aesgcm') bare = Math.max(bare ?? 0, await measureBareGcm(size, direction));
          }
          const ratio = go / ts;
          rows.push(
            `| ${c.provider} | ${size / 1024} KiB | ${direction} | ${Math.round(go)} | ${Math.round(ts)} | ${ratio.toFixed(2)}× | ${bare === undefined ? '–' : Math.round(bare)} |`,
          );
          json.push({ bench: 'oracle', provider: c.provider, size, direction, goPerSec: go, atrestPerSec: ts, ratio, bareNodeGcmPerSec: bare });
          console.log(JSON.stringify(json[json.length - 1]));
        }
      }
    }
    await ours.close();
    const goVersion = spawnSync('go', ['version'], { encoding: 'utf8' }).stdout?.trim() || 'go not on PATH';
    const section = [
      '## atrest vs kube-apiserver transformers (Go oracle)',
      '',
      '`npm run bench -- oracle` (bench/oracle.bench.ts). The same EncryptionConfiguration is loaded by',
      "k8s.io/apiserver v0.37.2's `LoadEncryptionConfig` in the Go oracle (conformance/oracle) and by",
      "atrest's `buildTransformers`. Each side runs its loop in-process, one value at a time, for about",
      `${durationMs} ms per measurement; each cell is measured ${ROUNDS} times per side, alternating Go and atrest,`,
      'and the best round of each side is kept. kms providers use the same running `atrest serve` (keyring',
      'backend) on both sides.',
      '"ratio" = Go values/s ÷ atrest values/s (1.00× = as fast as Go; above 1 = atrest is slower).',
      '"bare node:crypto" = AES-256-GCM seal/open with node:crypto and nothing around it (same size, same AAD',
      'length), measured in the same run: the most any Node aesgcm transformer can reach here.',
      '',
      `Machine: ${cpus().length} × ${cpus()[0]?.model ?? 'unknown CPU'}, Node ${process.version}, ${goVersion}; ` +
        `1-minute load average ${loadBefore.toFixed(1)} before and ${loadavg()[0]!.toFixed(1)} after the run ` +
        '(Go and atrest alternate cell by cell, so both see the same load).',
      '',
      '| provider | value | direction | Go values/s | atrest values/s | ratio | bare node:crypto values/s |',
      '|---|---|---|---|---|---|---|',
      ...rows,
      ...(notes.length ? ['', ...notes.map((n) => `Note: ${n}`)] : []),
      '',
    ].join('\n');
    mkdirSync(join('bench', 'results'), { recursive: true });
    writeFileSync(join('bench', 'results', 'oracle.md'), section);
    console.log(section);
  } finally {
    await oracle?.close();
    await plugin?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
