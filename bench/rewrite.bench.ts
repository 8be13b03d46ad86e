// `npm run bench -- rewrite`: rewrite throughput (aescbc -> aesgcm) on 20,000 Secrets of 2 KiB against
// a local etcd, beside the floor measured in the same run: plain etcd puts of the same stored values
// with the same client and the same concurrency. Writes bench/results/rewrite.md.

import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync, mkdirSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseEncryptionConfiguration } from '../src/config/parse.js';
import { buildTransformers } from '../src/config/build.js';
import { EtcdClient } from '../src/etcd/client.js';
import { createPolicyResolver } from '../src/etcd/policy.js';
import { rewrite, hashConfig } from '../src/etcd/rewrite.js';
import { createSelection } from '../src/etcd/selection.js';
import { mapPool } from '../src/paging.js';
import { createKeyedProvider, createPrefixTransformers } from '../src/transformers/prefix.js';
import { etcdBinary, startEtcd } from '../test/helpers/etcd.js';

const COUNT = Number(process.env.ATREST_BENCH_COUNT ?? 20_000);
const VALUE_SIZE = 2048;
const CONCURRENCY = Number(process.env.ATREST_BENCH_CONCURRENCY ?? 16);
// bench/run.mjs runs every benchmark from the repository root.
const root = process.cwd();

const oldKey = { name: 'old', secret: randomBytes(32) };
const newKey = { name: 'new', secret: randomBytes(32) };
const CONFIG = `apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - aesgcm: {keys: [{name: new, secret: ${newKey.secret.toString('base64')}}]}
      - aescbc: {keys: [{name: old, secret: ${oldKey.secret.toString('base64')}}]}
`;

function version(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8' }).split('\n')[0]!.trim();
  } catch {
    return 'unknown';
  }
}

async function main(): Promise<void> {
  const etcd = await startEtcd({ unsafeNoFsync: false });
  const client = new EtcdClient({ endpoints: [etcd.endpoint], connections: CONCURRENCY });
  try {
    const oldWriter = createPrefixTransformers([createKeyedProvider('aescbc', [oldKey])]);
    const keys = Array.from({ length: COUNT }, (_, i) => `/registry/secrets/bench-${i % 50}/secret-${String(i).padStart(6, '0')}`);
    // 2 KiB stored-size Secrets: the plaintext is sized so that the aescbc value is about 2 KiB
    const values = await Promise.all(
      keys.map((k) =>
        oldWriter.transformToStorage(randomBytes(VALUE_SIZE - 48), { authenticatedData: Buffer.from(k) }),
      ),
    );

    // Load them once (not measured: it also grows etcd's files), then the floor: plain puts of exactly
    // these values over the existing keys — overwrites, as the rewrite does — same client, same concurrency.
    await mapPool(keys, CONCURRENCY, (k, i) => client.put(Buffer.from(k), values[i]!));
    const floorStart = performance.now();
    await mapPool(keys, CONCURRENCY, (k, i) => client.put(Buffer.from(k), values[i]!));
    const floorSecs = (performance.now() - floorStart) / 1000;
    const floorRate = COUNT / floorSecs;

    const config = parseEncryptionConfiguration(CONFIG, 'bench.yaml');
    const built = buildTransformers(config);
    const policies = createPolicyResolver(config, '/registry', { transformerFor: (gr) => built.transformerFor(gr) });
    const selection = createSelection({ etcdPrefix: '/registry', config, resources: ['secrets'] });
    const phases: Record<string, number> = {};
    let phase = '';
    let phaseStart = performance.now();
    const started = performance.now();
    const report = await rewrite({
      store: client,
      selection,
      policies,
      configHash: hashConfig(Buffer.from(CONFIG)),
      etcdPrefix: '/registry/',
      concurrency: CONCURRENCY,
      onProgress: (p) => {
        if (p.phase !== phase) {
          const t = performance.now();
          if (phase) phases[phase] = (t - phaseStart) / 1000;
          phase = p.phase;
          phaseStart = t;
        }
      },
    });
    const totalSecs = (performance.now() - started) / 1000;
    phases[phase] = (performance.now() - phaseStart) / 1000;
    if (!report.converged || report.counts.rewritten !== COUNT) {
      throw new Error(`rewrite did not converge: ${JSON.stringify(report.counts)}`);
    }
    const rewriteSecs = phases.rewrite ?? totalSecs;
    const rewriteRate = COUNT / rewriteSecs;
    const endToEndRate = COUNT / totalSecs;
    const status = await client.status();

    const fmt = (n: number): string => n.toFixed(0);
    const md = [
      '## rewrite: re-encrypting Secrets in etcd (aescbc -> aesgcm)',
      '',
      '`npm run bench -- rewrite` (bench/rewrite.bench.ts)',
      '',
      `Machine: ${cpus().length} × ${cpus()[0]?.model ?? 'unknown CPU'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, ` +
        `Node ${process.version}, ${version('go', ['version'])}, etcd ${status.version} ` +
        `(local, one member, fsync on, ${etcdBinary('etcd')}).`,
      '',
      `${COUNT} Secrets, each stored value ${values[0]!.length} bytes; client: atrest's EtcdClient ` +
        `(etcd gRPC API, protobuf over one HTTP/2 connection), ${CONCURRENCY} calls in flight for both rows (the floor: single-key puts; ` +
        'the rewrite: conditional transactions of up to 64 keys, each with its read-back).',
      '',
      '| What | Seconds | Keys/s | vs floor |',
      '|---|---:|---:|---:|',
      `| floor: plain \`put\` of the same values over the same keys | ${floorSecs.toFixed(2)} | ${fmt(floorRate)} | 1.00 |`,
      `| rewrite phase (decrypt, encrypt, conditional txns of up to 64 keys + read-back, verify) | ${rewriteSecs.toFixed(2)} | ${fmt(rewriteRate)} | ${(rewriteRate / floorRate).toFixed(2)} |`,
      `| whole command (preflight decrypt of all + rewrite + verification scan) | ${totalSecs.toFixed(2)} | ${fmt(endToEndRate)} | ${(endToEndRate / floorRate).toFixed(2)} |`,
      '',
      `Phases: preflight ${(phases.preflight ?? 0).toFixed(2)} s, rewrite ${rewriteSecs.toFixed(2)} s, ` +
        `verification scan ${(phases.verify ?? 0).toFixed(2)} s. Target: the rewrite phase at least 0.5 of the floor.`,
      '',
    ].join('\n');
    mkdirSync(join(root, 'bench', 'results'), { recursive: true });
    writeFileSync(join(root, 'bench', 'results', 'rewrite.md'), md);
    process.stdout.write(md);
  } finally {
    await client.close();
    await etcd.stop();
  }
}

await main();
