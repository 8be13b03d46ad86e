// Benchmark of break-glass recovery's cost: the same keyring plugin with and without
// `--recovery-public-key`, Encrypt+Decrypt pairs (v1beta1 and v2) over the UNIX socket, side by side
// in one run. With sealing on, every Encrypt also seals the DEK/seed to the recovery key (one X25519
// agreement + HKDF + AES-GCM); Decrypt is unchanged. Writes bench/results/recovery.md.
//
//   npm run bench -- recovery          (or: node dist/bench/recovery.bench.js [--seconds N])

import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as v1 from '../src/proto/kms-v1beta1.js';
import { createGrpcClient, type GrpcClient } from '../src/grpc/client.js';
import { createKeyring, writeKeyringFile } from '../src/backends/keyring-file.js';
import { publicKeyPem } from '../src/recovery/keys.js';
import { generateRecoveryKey } from '../src/recovery/seal.js';
import { T, driveLoad, v1Pair, v2Pair, type Op, type Row } from './rpc-load.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const RESULTS = join(process.cwd(), 'bench', 'results', 'recovery.md');
const secondsArg = process.argv.indexOf('--seconds');
const SECONDS = secondsArg > 0 ? Number(process.argv[secondsArg + 1]) : 4;

interface Plugin {
  readonly child: ChildProcess;
  readonly client: GrpcClient;
}

async function startPlugin(dir: string, name: string, keyring: string, extra: string[]): Promise<Plugin> {
  const socket = join(dir, `${name}.sock`);
  const child = spawn(
    process.execPath,
    [CLI, 'serve', '--listen', `unix://${socket}`, '--keyring', keyring, '--health-listen', 'off', '--log-level', 'warn', ...extra],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  const client = createGrpcClient({ address: socket });
  for (let i = 0; ; i++) {
    try {
      await client.unary(v1.V1BETA1_METHODS.version, v1.VersionRequest.encode({ version: 'v1beta1' }), T);
      return { child, client };
    } catch (err) {
      if (i > 200 || child.exitCode !== null) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'atrest-bench-recovery-'));
  const keyring = join(dir, 'keyring.json');
  await writeKeyringFile(keyring, createKeyring({ now: new Date(), random: randomBytes }), { exclusive: true, random: randomBytes });
  const pub = join(dir, 'recovery.pub.pem');
  await writeFile(pub, publicKeyPem(generateRecoveryKey()));
  const plain = await startPlugin(dir, 'plain', keyring, []);
  const sealed = await startPlugin(dir, 'sealed', keyring, ['--recovery-public-key', pub]);
  const rows: { workload: string; off: Row; on: Row }[] = [];
  try {
    const workloads: [string, (c: GrpcClient) => Op][] = [
      ['v1beta1 Encrypt+Decrypt', v1Pair],
      ['v2 Encrypt+Decrypt', v2Pair],
    ];
    for (const [, make] of workloads) {
      for (const p of [plain, sealed]) await driveLoad(make(p.client), 8, undefined, 1);
    }
    for (const concurrency of [1, 16]) {
      for (const [workload, make] of workloads) {
        const off = { name: workload, ...(await driveLoad(make(plain.client), concurrency, plain.child.pid, SECONDS)) };
        const on = { name: workload, ...(await driveLoad(make(sealed.client), concurrency, sealed.child.pid, SECONDS)) };
        rows.push({ workload, off, on });
      }
    }
  } finally {
    for (const p of [plain, sealed]) {
      await p.client.close();
      p.child.kill('SIGTERM');
      await new Promise((r) => p.child.once('exit', r));
    }
    await rm(dir, { recursive: true, force: true });
  }
  const f = (n: number | undefined, d = 2): string => (n === undefined ? '–' : n.toFixed(d));
  const table = [
    '| workload | concurrency | RPC/s off | RPC/s on | p50 ms off / on | server CPU s / 10k RPCs off | on | CPU on/off |',
    '|---|---:|---:|---:|---:|---:|---:|---:|',
    ...rows.map(
      ({ workload, off, on }) =>
        `| ${workload} | ${off.concurrency} | ${off.rpcPerSec.toFixed(0)} | ${on.rpcPerSec.toFixed(0)} | ${f(off.p50ms, 3)} / ${f(on.p50ms, 3)} | ${f(off.cpuPer10k)} | ${f(on.cpuPer10k)} | ${off.cpuPer10k && on.cpuPer10k ? (on.cpuPer10k / off.cpuPer10k).toFixed(2) + '×' : '–'} |`,
    ),
  ].join('\n');
  const section = [
    '## recovery: the cost of sealing every DEK/seed to an offline recovery key',
    '',
    `Command: \`npm run bench -- recovery\` (node dist/bench/recovery.bench.js, ${SECONDS} s per row).`,
    `Machine: ${cpus().length} × ${cpus()[0]?.model ?? 'unknown CPU'}, Node ${process.version}; run at ${new Date().toISOString()}, load average ${loadavg()[0]!.toFixed(1)}.`,
    '',
    'Two `atrest serve --backend keyring` processes on the same keyring, one with `--recovery-public-key`',
    '("on"), measured one after the other in the same run. Each Encrypt+Decrypt pair counts as 2 RPCs, so',
    'the seal (one X25519 agreement, HKDF and AES-256-GCM per Encrypt) is spread over both. With KMS v2,',
    'kube-apiserver calls Encrypt once per DEK seed (at start and on a key_id change), not per write: the',
    'v2 row is the cost per seed, and the cost per stored object is nil. With KMS v1 every write pays it.',
    '',
    table,
    '',
  ].join('\n');
  await mkdir(join(RESULTS, '..'), { recursive: true });
  await writeFile(RESULTS, section);
  process.stdout.write(section);
}

main().catch((err: unknown) => {
  process.stderr.write(`recovery bench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exitCode = 1;
});
