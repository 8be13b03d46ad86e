// Values per second through each storage format (1 KiB and 64 KiB, encrypt and decrypt), with bare
// node:crypto AES-256-GCM as the reference measured in the same run. Writes bench/results/transformers.md
// and prints one JSON line per measurement (for the Go-oracle comparison to reuse).
//
//   npm run bench -- transformers     (ATREST_BENCH_MS: ms per measurement, default 500;
//                                      ATREST_BENCH_ROUNDS: rounds, default 3, median reported)
//
// kms v1 / kms v2 use an in-process fake KMS (AES-GCM key wrapping, no socket): the numbers are the
// format's own cost plus one in-process wrap per kms v1 write, not a plugin's latency.

import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { createKeyedProvider, createPrefixTransformers } from '../src/transformers/prefix.js';
import { createIdentityProvider } from '../src/transformers/prefix.js';
import { createKmsV1Transformer } from '../src/transformers/kms-v1.js';
import { createKmsV2Transformer } from '../src/transformers/kms-v2.js';
import type { TransformContext, Transformer } from '../src/transformers/transformer.js';
import { createFakeKmsV1, createFakeKmsV2 } from '../test/transformers/helpers.js';

export interface TransformerBenchRow {
  readonly bench: 'transformers';
  readonly impl: 'atrest' | 'node:crypto reference';
  readonly provider: string;
  readonly size: number;
  readonly op: 'encrypt' | 'decrypt';
  readonly valuesPerSec: number;
  /** CPU time of this process per value (user + system): steadier than wall time on a shared machine. */
  readonly cpuMicrosPerValue: number;
  readonly iterations: number;
}

export interface TransformerBenchOptions {
  /** Time spent per measurement (after a short warm-up). */
  readonly durationMs?: number;
  readonly sizes?: readonly number[];
  readonly providers?: readonly string[];
  /** Each measurement is repeated this many times, round-robin; the median round is reported. */
  readonly rounds?: number;
}

export const BENCH_PROVIDERS = [
  'identity',
  'aescbc',
  'aesgcm',
  'secretbox',
  'kms-v1',
  'kms-v2',
] as const;
export const BENCH_SIZES = [1024, 64 * 1024] as const;
const ETCD_KEY = '/registry/secrets/default/bench-secret';

/** The prefix list for one provider, built the way the config layer builds it (first key writes). */
export async function benchTransformer(provider: string): Promise<Transformer> {
  const key = randomBytes(32);
  switch (provider) {
    case 'identity':
      return createPrefixTransformers([createIdentityProvider()]);
    case 'aescbc':
    case 'aesgcm':
    case 'secretbox':
      return createPrefixTransformers([
        createKeyedProvider(provider, [{ name: 'key1', secret: key }]),
      ]);
    case 'kms-v1':
      return createPrefixTransformers([
        createKmsV1Transformer({ name: 'bench', service: createFakeKmsV1(), cacheSize: 1000 }),
      ]);
    case 'kms-v2': {
      const t = createKmsV2Transformer({ name: 'bench', service: createFakeKmsV2() });
      const h = await t.refreshStatus();
      if (!h.ok) throw h.error;
      return createPrefixTransformers([t]);
    }
    default:
      throw new TypeError(`unknown provider ${provider}`);
  }
}

interface Measurement {
  readonly valuesPerSec: number;
  readonly cpuMicrosPerValue: number;
  readonly iterations: number;
}

async function measure(fn: () => Promise<unknown>, durationMs: number): Promise<Measurement> {
  const warmUntil = performance.now() + Math.min(200, durationMs / 5);
  while (performance.now() < warmUntil) await fn();
  let n = 0;
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  const end = start + durationMs;
  let now = start;
  while (now < end) {
    for (let i = 0; i < 16; i++) await fn();
    n += 16;
    now = performance.now();
  }
  const cpu = process.cpuUsage(cpu0);
  return {
    valuesPerSec: n / ((now - start) / 1000),
    cpuMicrosPerValue: (cpu.user + cpu.system) / n,
    iterations: n,
  };
}

/** Bare node:crypto AES-256-GCM with the same nonce/AAD work and no framing: the floor for aesgcm. */
function referenceGcm(): {
  seal: (v: Buffer) => Promise<Buffer>;
  open: (v: Buffer) => Promise<Buffer>;
} {
  const key = randomBytes(32);
  const aad = Buffer.from(ETCD_KEY);
  return {
    async seal(v) {
      const nonce = randomBytes(12);
      const c = createCipheriv('aes-256-gcm', key, nonce);
      c.setAAD(aad);
      return Buffer.concat([nonce, c.update(v), c.final(), c.getAuthTag()]);
    },
    async open(v) {
      const d = createDecipheriv('aes-256-gcm', key, v.subarray(0, 12));
      d.setAAD(aad);
      d.setAuthTag(v.subarray(v.length - 16));
      return Buffer.concat([d.update(v.subarray(12, v.length - 16)), d.final()]);
    },
  };
}

/**
 * Runs every measurement `rounds` times, round-robin (so machine noise spreads over all of them), and
 * reports the median round of each. Reusable by the Go-oracle comparison (same providers, sizes, ops).
 */
export async function runTransformerBench(
  options: TransformerBenchOptions = {},
): Promise<TransformerBenchRow[]> {
  const durationMs = options.durationMs ?? 500;
  const rounds = options.rounds ?? 3;
  const sizes = options.sizes ?? BENCH_SIZES;
  const providers = options.providers ?? BENCH_PROVIDERS;
  const context: TransformContext = { authenticatedData: Buffer.from(ETCD_KEY) };

  interface Job {
    readonly key: Omit<TransformerBenchRow, 'bench' | keyof Measurement>;
    readonly run: () => Promise<unknown>;
    readonly samples: Measurement[];
  }
  const jobs: Job[] = [];
  for (const size of sizes) {
    const value = randomBytes(size);
    const ref = referenceGcm();
    const sealed = await ref.seal(value);
    const reference = { impl: 'node:crypto reference', provider: 'aes-256-gcm', size } as const;
    jobs.push({ key: { ...reference, op: 'encrypt' }, run: () => ref.seal(value), samples: [] });
    jobs.push({ key: { ...reference, op: 'decrypt' }, run: () => ref.open(sealed), samples: [] });
    for (const provider of providers) {
      const t = await benchTransformer(provider);
      const stored = await t.transformToStorage(value, context);
      const base = { impl: 'atrest', provider, size } as const;
      jobs.push({
        key: { ...base, op: 'encrypt' },
        run: () => t.transformToStorage(value, context),
        samples: [],
      });
      jobs.push({
        key: { ...base, op: 'decrypt' },
        run: () => t.transformFromStorage(stored, context),
        samples: [],
      });
    }
  }
  for (let round = 0; round < rounds; round++) {
    for (const job of jobs) job.samples.push(await measure(job.run, durationMs));
  }
  return jobs.map((job) => {
    const sorted = [...job.samples].sort((a, b) => a.valuesPerSec - b.valuesPerSec);
    const median = sorted[Math.floor(sorted.length / 2)]!;
    const row: TransformerBenchRow = { bench: 'transformers', ...job.key, ...median };
    console.log(JSON.stringify(row));
    return row;
  });
}

function goVersion(): string {
  const r = spawnSync('go', ['version'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : 'go not found';
}

function fmt(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

export function transformerBenchMarkdown(
  rows: readonly TransformerBenchRow[],
  durationMs: number,
  rounds = 3,
): string {
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  const lines = [
    '## Storage formats (transformers)',
    '',
    `Command: \`npm run bench -- transformers\` (bench/transformers.bench.ts: ${durationMs} ms per measurement,`,
    `${rounds} rounds round-robin, median round shown; one value at a time, awaited). Values per second`,
    'through the prefix list the config layer builds; the',
    'etcd key is the AAD. kms v1/v2 use an in-process fake KMS (no socket): kms v1 pays one in-process',
    'AES-GCM key wrap per write, kms v2 none (its seed is wrapped once). Reference: bare node:crypto',
    'AES-256-GCM (nonce + seal/open, no prefix or framing), measured in the same run.',
    '',
    `Machine: ${cpus().length} × ${cpu}, Node ${process.version}, ${goVersion()}; load average at the`,
    `end of the run: ${loadavg()
      .map((l) => l.toFixed(1))
      .join(' / ')} (1/5/15 min). On a loaded machine`,
    'trust the CPU µs column and the ratio to the reference more than absolute values/s.',
    '',
  ];
  for (const size of [...new Set(rows.map((r) => r.size))]) {
    lines.push(`### ${size >= 1024 ? `${size / 1024} KiB` : `${size} B`} values`, '');
    lines.push(
      '| implementation | provider | encrypt values/s | decrypt values/s | encrypt MiB/s | decrypt MiB/s | CPU µs/value enc / dec |',
    );
    lines.push('|---|---|---:|---:|---:|---:|---:|');
    const keys = [
      ...new Set(rows.filter((r) => r.size === size).map((r) => `${r.impl}\u0000${r.provider}`)),
    ];
    for (const k of keys) {
      const [impl, provider] = k.split('\u0000') as [string, string];
      const row = (op: string) =>
        rows.find(
          (r) => r.size === size && r.impl === impl && r.provider === provider && r.op === op,
        );
      const e = row('encrypt');
      const d = row('decrypt');
      const mib = (v = 0) => ((v * size) / 2 ** 20).toFixed(1);
      const cpu = (v = 0) => v.toFixed(1);
      lines.push(
        `| ${impl} | ${provider} | ${fmt(e?.valuesPerSec ?? 0)} | ${fmt(d?.valuesPerSec ?? 0)} | ` +
          `${mib(e?.valuesPerSec)} | ${mib(d?.valuesPerSec)} | ${cpu(e?.cpuMicrosPerValue)} / ${cpu(d?.cpuMicrosPerValue)} |`,
      );
    }
    lines.push('');
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const durationMs = Number(process.env.ATREST_BENCH_MS ?? 500);
  const rounds = Number(process.env.ATREST_BENCH_ROUNDS ?? 3);
  const rows = await runTransformerBench({ durationMs, rounds });
  const dir = join('bench', 'results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'transformers.md'), transformerBenchMarkdown(rows, durationMs, rounds));
  console.log(`wrote ${join(dir, 'transformers.md')}`);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main();
}
