// Remote key backends against real servers: moto's AWS KMS (scripts/setup/30-moto.sh), OpenBao's
// Transit (70-openbao.sh) and PyKMIP's KMIP server (71-pykmip.sh): remote calls per 10,000
// Encrypt+Decrypt with and without the local KEK tier (and after a restart), and the plugin's RPC
// latency over its UNIX socket with each backend next to the local keyring, measured in the same
// run. Writes bench/results/backends.md.
//
//   npm run bench -- backends            (or: node dist/bench/backends.bench.js [--seconds N])

import { spawn, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import { realpathSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CreateKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import * as v2 from '../src/proto/kms-v2.js';
import { createGrpcClient, type GrpcClient } from '../src/grpc/client.js';
import { createKeyring, writeKeyringFile } from '../src/backends/keyring-file.js';
import { createAwsKmsService } from '../src/backends/aws-kms.js';
import { createVaultTransitService } from '../src/backends/vault-transit.js';
import { createKmipService } from '../src/backends/kmip/kmip.js';
import {
  createRemoteBackend,
  type KekService,
  type RemoteKeyBackend,
} from '../src/backends/remote.js';
import { answersHttp, findTool, freePort, startServer } from '../test/backends/servers.js';
import { createOpenBao, provisionTransit, transitToken } from '../test/backends/openbao.js';
import { createPyKmip } from '../test/backends/pykmip.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const RESULTS = join(process.cwd(), 'bench', 'results', 'backends.md');
const secondsArg = process.argv.indexOf('--seconds');
const SECONDS = secondsArg > 0 ? Number(process.argv[secondsArg + 1]) : 3;
const PAIRS = 5_000; // 5,000 Encrypt + 5,000 Decrypt = 10,000 RPCs
const T = { timeoutMs: 10_000 };

process.env['AWS_ACCESS_KEY_ID'] ??= 'atrest-bench';
process.env['AWS_SECRET_ACCESS_KEY'] ??= 'atrest-bench-secret';
process.env['AWS_REGION'] ??= 'us-east-1';

function total(b: RemoteKeyBackend): number {
  const c = b.remoteCalls();
  return c.resolve + c.encrypt + c.decrypt;
}

interface CountRow {
  readonly name: string;
  readonly rpcs: number;
  readonly remoteCalls: number;
  readonly detail: string;
}

/** Names of the three remote calls, per backend, for the "of which" column. */
interface CallNames {
  readonly resolve: string;
  readonly encrypt: string;
  readonly decrypt: string;
}

async function countRemoteCalls(
  label: string,
  names: CallNames,
  service: () => KekService,
  tier: boolean,
): Promise<CountRow[]> {
  const open = (): RemoteKeyBackend =>
    createRemoteBackend(service(), {
      localKEK: tier ? {} : false,
      background: false,
    });
  const b = open();
  const wrapped = [];
  for (let i = 0; i < PAIRS; i++) {
    const w = await b.wrap({ plaintext: randomBytes(32) });
    await b.unwrap({ ciphertext: w.ciphertext, keyID: w.keyID });
    wrapped.push(w);
  }
  const c = b.remoteCalls();
  const rows: CountRow[] = [
    {
      name: `${label}, ${tier ? 'with the local KEK tier' : 'without the local KEK tier'}`,
      rpcs: PAIRS * 2,
      remoteCalls: total(b),
      detail: `${names.resolve} ${c.resolve}, ${names.encrypt} ${c.encrypt}, ${names.decrypt} ${c.decrypt}`,
    },
  ];
  await b.close();
  if (tier) {
    const restarted = open();
    for (const w of wrapped) await restarted.unwrap({ ciphertext: w.ciphertext, keyID: w.keyID });
    const r = restarted.remoteCalls();
    rows.push({
      name: `${label}, with the tier, after a restart: Decrypt of the 5,000 DEKs above`,
      rpcs: PAIRS,
      remoteCalls: total(restarted),
      detail: `${names.resolve} ${r.resolve}, ${names.encrypt} ${r.encrypt}, ${names.decrypt} ${r.decrypt}`,
    });
    await restarted.close();
  }
  return rows;
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

interface LatencyRow {
  readonly name: string;
  readonly concurrency: number;
  readonly rpcs: number;
  readonly rpcPerSec: number;
  readonly p50ms: number;
  readonly p99ms: number;
  /** Encrypt+Decrypt pairs that failed (timeouts against an overloaded emulator). */
  readonly failed: number;
}

async function drive(
  c: GrpcClient,
  concurrency: number,
  seconds: number,
): Promise<Omit<LatencyRow, 'name'>> {
  const seed = randomBytes(32);
  const uid = '6f1e0a4c-8d2b-4c3e-9f5a-7b6c5d4e3f2a';
  const latencies: number[] = [];
  let rpcs = 0;
  let failed = 0;
  const rpc = async (): Promise<void> => {
    try {
      await pair();
    } catch {
      // A key manager too slow for the call timeout fails the RPC (UNAVAILABLE): count it.
      failed++;
    }
  };
  const pair = async (): Promise<void> => {
    const t0 = performance.now();
    const enc = v2.EncryptResponse.decode(
      await c.unary(v2.V2_METHODS.encrypt, v2.EncryptRequest.encode({ plaintext: seed, uid }), T),
    );
    const t1 = performance.now();
    await c.unary(
      v2.V2_METHODS.decrypt,
      v2.DecryptRequest.encode({
        ciphertext: enc.ciphertext,
        uid,
        key_id: enc.key_id,
        annotations: enc.annotations,
      }),
      T,
    );
    latencies.push(t1 - t0, performance.now() - t1);
    rpcs += 2;
  };
  const warmUntil = performance.now() + 500;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < warmUntil) await rpc();
    }),
  );
  latencies.length = 0;
  rpcs = 0;
  failed = 0;
  const started = performance.now();
  const until = started + seconds * 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < until) await rpc();
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    concurrency,
    rpcs,
    failed,
    rpcPerSec: rpcs / elapsed,
    p50ms: percentile(latencies, 50),
    p99ms: percentile(latencies, 99),
  };
}

async function servePlugin(
  dir: string,
  name: string,
  args: readonly string[],
): Promise<{ client: GrpcClient; stop: () => Promise<void> }> {
  const socket = join(dir, `${name}.sock`);
  const server = spawn(
    process.execPath,
    [
      CLI,
      'serve',
      '--listen',
      `unix://${socket}`,
      '--health-listen',
      'off',
      '--log-level',
      'warn',
      ...args,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'], env: process.env },
  );
  let stderr = '';
  server.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const client = createGrpcClient({ address: socket });
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      const s = v2.StatusResponse.decode(
        await client.unary(v2.V2_METHODS.status, v2.StatusRequest.encode({}), T),
      );
      if (s.healthz === 'ok') break;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline || server.exitCode !== null) {
      server.kill('SIGKILL');
      throw new Error(`atrest serve ${args.join(' ')} did not become healthy:\n${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    client,
    async stop() {
      await client.close();
      server.kill('SIGTERM');
      if (server.exitCode === null) await new Promise((r) => server.once('exit', r));
    },
  };
}

function motoVersion(): string {
  try {
    const python = join(realpathSync(findTool('moto_server', '30-moto.sh')), '..', 'python');
    const v = execFileSync(python, ['-c', 'import moto; print(moto.__version__)'], {
      encoding: 'utf8',
    }).trim();
    return `moto ${v}`;
  } catch {
    return 'moto (version unknown)';
  }
}

function baoVersion(): string {
  try {
    const out = execFileSync(findTool('bao', '70-openbao.sh'), ['version'], { encoding: 'utf8' });
    return out.split(' (')[0]!.trim();
  } catch {
    return 'OpenBao (version unknown)';
  }
}

function pykmipVersion(): string {
  try {
    const v = execFileSync(
      findTool('pykmip-python', '71-pykmip.sh'),
      ['-c', 'import kmip; print(kmip.__version__)'],
      { encoding: 'utf8' },
    ).trim();
    return `PyKMIP ${v}`;
  } catch {
    return 'PyKMIP (version unknown)';
  }
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'atrest-bench-backends-'));
  const port = await freePort();
  const endpoint = `http://127.0.0.1:${port}`;
  const moto = await startServer(
    findTool('moto_server', '30-moto.sh'),
    ['-H', '127.0.0.1', '-p', String(port)],
    () => answersHttp(`${endpoint}/moto-api/`),
  );
  const admin = new KMSClient({ endpoint, region: 'us-east-1' });
  const bao = await createOpenBao('dev');
  const kmip = await createPyKmip();
  const counts: CountRow[] = [];
  const latency: LatencyRow[] = [];
  try {
    const keyArn = (await admin.send(new CreateKeyCommand({ Description: 'atrest bench' })))
      .KeyMetadata!.Arn!;
    await provisionTransit(bao, 'atrest-bench');
    const baoTokenFile = join(dir, 'bao-token');
    await writeFile(baoTokenFile, (await transitToken(bao, 'atrest-bench')) + '\n');
    await kmip.createKey('atrest-bench');
    const kmipConfig = await kmip.config('atrest-bench');

    const aws = (): KekService => createAwsKmsService({ keyId: keyArn, endpoint });
    const awsNames = { resolve: 'DescribeKey', encrypt: 'Encrypt', decrypt: 'Decrypt' };
    const transit = (): KekService =>
      createVaultTransitService({
        address: bao.address,
        mount: 'transit',
        keyName: 'atrest-bench',
        auth: { method: 'token', token: async () => bao.rootToken() },
      });
    const transitNames = { resolve: 'read key', encrypt: 'encrypt', decrypt: 'decrypt' };
    const kmipService = (): KekService => createKmipService(kmipConfig);
    const kmipNames = { resolve: 'Locate', encrypt: 'Encrypt', decrypt: 'Decrypt' };
    for (const tier of [true, false]) {
      counts.push(...(await countRemoteCalls('aws-kms', awsNames, aws, tier)));
      counts.push(...(await countRemoteCalls('vault-transit', transitNames, transit, tier)));
      counts.push(...(await countRemoteCalls('kmip', kmipNames, kmipService, tier)));
    }

    const keyring = join(dir, 'keyring.json');
    await writeKeyringFile(keyring, createKeyring({ now: new Date(), random: randomBytes }), {
      exclusive: true,
      random: randomBytes,
    });
    const configs: Record<string, (tier: boolean) => string[]> = {
      'aws-kms': (tier) => [
        'aws-kms:',
        `  keyId: ${keyArn}`,
        `  endpoint: ${endpoint}`,
        '  region: us-east-1',
        `  localKEK: ${tier}`,
      ],
      'vault-transit': (tier) => [
        'vault-transit:',
        `  address: ${bao.address}`,
        '  keyName: atrest-bench',
        `  auth: { method: token, tokenFile: ${baoTokenFile} }`,
        `  localKEK: ${tier}`,
      ],
      kmip: (tier) => [
        'kmip:',
        `  address: 127.0.0.1:${kmip.port}`,
        '  keyName: atrest-bench',
        `  caFile: ${join(kmip.dir, 'ca.pem')}`,
        `  clientCertFile: ${join(kmip.dir, 'client.pem')}`,
        `  clientKeyFile: ${join(kmip.dir, 'client-key.pem')}`,
        `  localKEK: ${tier}`,
      ],
    };
    const server: Record<string, string> = {
      'aws-kms': 'moto',
      'vault-transit': 'OpenBao',
      kmip: 'PyKMIP',
    };
    await mkdir(dir, { recursive: true });
    const setups: [string, string[]][] = [['keyring (reference)', ['--keyring', keyring]]];
    for (const [backend, config] of Object.entries(configs)) {
      for (const tier of [true, false]) {
        const file = join(dir, `${backend}-${tier ? 'tier' : 'direct'}.yaml`);
        await writeFile(file, [...config(tier), ''].join('\n'));
        setups.push([
          tier
            ? `${backend}, local KEK tier`
            : `${backend}, no tier (every RPC calls ${server[backend]})`,
          ['--backend', backend, '--backend-config', file],
        ]);
      }
    }
    for (const [name, args] of setups) {
      const plugin = await servePlugin(dir, name.split(/[ ,]/)[0]! + latency.length, args);
      try {
        for (const concurrency of [1, 64])
          latency.push({ name, ...(await drive(plugin.client, concurrency, SECONDS)) });
      } finally {
        await plugin.stop();
      }
    }
  } finally {
    admin.destroy();
    await moto.stop();
    await bao.close();
    await kmip.close();
    await rm(dir, { recursive: true, force: true });
  }

  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  const f = (n: number, d = 2): string => n.toFixed(d);
  const md = [
    '## Remote key backends (AWS KMS via moto, Vault Transit via OpenBao, KMIP via PyKMIP)',
    '',
    '`npm run bench -- backends` (bench/backends.bench.ts). Machine: ' +
      `${cpus().length} × ${cpu}, Node ${process.version}; key managers on 127.0.0.1: AWS KMS ` +
      `emulator ${motoVersion()}, ${baoVersion()} (dev server, in memory), ${pykmipVersion()} ` +
      '(TLS 1.2 with client certificates, SQLite).',
    '',
    `### Remote calls per ${PAIRS * 2} RPCs (${PAIRS} Encrypt + ${PAIRS} Decrypt, in-process backend)`,
    '',
    '| backend | RPCs | remote calls | of which |',
    '|---|---:|---:|---|',
    ...counts.map((r) => `| ${r.name} | ${r.rpcs} | ${r.remoteCalls} | ${r.detail} |`),
    '',
    'Every attempt of every remote call is counted (DescribeKey / read key / Locate is the key-id',
    'refresh; the background refresh is off here so the count is exact — in `serve` it adds one such',
    'call per refresh interval).',
    '',
    `### v2 Encrypt/Decrypt latency through \`atrest serve\` (${SECONDS} s per row, one HTTP/2 connection)`,
    '',
    '| backend | concurrency | RPCs | RPC/s | p50 ms | p99 ms | failed pairs |',
    '|---|---:|---:|---:|---:|---:|---:|',
    ...latency.map(
      (r) =>
        `| ${r.name} | ${r.concurrency} | ${r.rpcs} | ${f(r.rpcPerSec, 0)} | ${f(r.p50ms, 3)} | ${f(r.p99ms, 3)} | ${r.failed} |`,
    ),
    '',
    'The key managers run on the same machine, so the no-tier rows measure a local round trip to',
    'moto (Python, HTTP), OpenBao (Go, HTTP) or PyKMIP (Python, TLS, one request per connection at a',
    'time, 4 connections), not a production key manager; against a remote one each such call adds a',
    'network round trip.',
    '',
  ].join('\n');
  await writeFile(RESULTS, md);
  process.stdout.write(md);
}

await main();
