// Benchmark of the KMS plugin over its UNIX socket: Encrypt+Decrypt pairs (v1beta1 and v2) at
// concurrency 1, 16 and 64 on one HTTP/2 connection (as kube-apiserver uses one), reporting RPC/s,
// p50/p99 latency and the server process's CPU seconds per 10,000 RPCs (from /proc/<pid>/stat).
// References measured in the same run: the keyring backend's wrap+unwrap in-process (no transport)
// and the v1 Version RPC (transport only). Writes bench/results/plugin.md.
//
//   npm run bench -- plugin            (or: node dist/bench/plugin.bench.js [--seconds N])

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as v1 from '../src/proto/kms-v1beta1.js';
import { createGrpcClient } from '../src/grpc/client.js';
import { createKeyring, writeKeyringFile } from '../src/backends/keyring-file.js';
import { createKeyringBackend } from '../src/backends/keyring.js';
import { T, driveLoad, v1Pair, v2Pair, versionOnly, type Op, type Row } from './rpc-load.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
/** bench/run.mjs runs every benchmark from the repository root. */
const RESULTS = join(process.cwd(), 'bench', 'results', 'plugin.md');
const secondsArg = process.argv.indexOf('--seconds');
const SECONDS = secondsArg > 0 ? Number(process.argv[secondsArg + 1]) : 4;
const drive = (op: Op, concurrency: number, pid: number | undefined, seconds = SECONDS) =>
  driveLoad(op, concurrency, pid, seconds);

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'atrest-bench-'));
  const keyring = join(dir, 'keyring.json');
  await writeKeyringFile(keyring, createKeyring({ now: new Date(), random: randomBytes }), {
    exclusive: true,
    random: randomBytes,
  });
  const socket = join(dir, 'kms.sock');
  const args = [
    'serve',
    '--listen',
    `unix://${socket}`,
    '--keyring',
    keyring,
    '--health-listen',
    'off',
    '--log-level',
    'warn',
  ];
  const server = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  server.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const rows: Row[] = [];
  try {
    const client = createGrpcClient({ address: socket });
    await client.unary(
      v1.V1BETA1_METHODS.version,
      v1.VersionRequest.encode({ version: 'v1beta1' }),
      T,
    );
    const pid = server.pid!;

    // Warm the JIT of both processes on every path before anything is recorded.
    for (const op of [versionOnly(client), v1Pair(client), v2Pair(client)])
      await drive(op, 8, undefined, 1);

    // Reference 1: the same backend in-process, no transport (what the crypto costs).
    const backend = await createKeyringBackend({ path: keyring });
    const dek = randomBytes(32);
    const inProcess: Op = async () => {
      const w = await backend.wrap({ plaintext: dek });
      await backend.unwrap({ ciphertext: w.ciphertext, keyID: w.keyID });
      return 2;
    };
    rows.push({
      name: 'reference: keyring wrap+unwrap in-process (no socket)',
      ...(await drive(inProcess, 1, undefined)),
    });
    await backend.close();

    for (const concurrency of [1, 64]) {
      rows.push({
        name: 'reference: v1beta1 Version (transport only)',
        ...(await drive(versionOnly(client), concurrency, pid)),
      });
    }
    for (const concurrency of [1, 16, 64]) {
      rows.push({
        name: 'v1beta1 Encrypt+Decrypt',
        ...(await drive(v1Pair(client), concurrency, pid)),
      });
      rows.push({ name: 'v2 Encrypt+Decrypt', ...(await drive(v2Pair(client), concurrency, pid)) });
    }
    await client.close();
  } finally {
    server.kill('SIGTERM');
    await new Promise((r) => server.once('exit', r));
    await rm(dir, { recursive: true, force: true });
  }
  if (stderr.includes('"level":"error"')) process.stderr.write(stderr);

  const fmt = (n: number | undefined, d = 2): string => (n === undefined ? '–' : n.toFixed(d));
  const table = [
    '| workload | concurrency | RPCs | RPC/s | p50 ms | p99 ms | server CPU s / 10k RPCs |',
    '|---|---:|---:|---:|---:|---:|---:|',
    ...rows.map(
      (r) =>
        `| ${r.name} | ${r.concurrency} | ${r.rpcs} | ${r.rpcPerSec.toFixed(0)} | ${fmt(r.p50ms, 3)} | ${fmt(r.p99ms, 3)} | ${fmt(r.cpuPer10k)} |`,
    ),
  ].join('\n');
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  const section = [
    '## plugin: KMS Encrypt+Decrypt over the UNIX socket',
    '',
    `Command: \`npm run bench -- plugin\` (node dist/bench/plugin.bench.js, ${SECONDS} s per row after 3 s of warm-up on all paths and 0.5 s per row).`,
    `Machine: ${cpus().length} × ${cpu}, Node ${process.version}; run at ${new Date().toISOString()}, load average ${loadavg()[0]!.toFixed(1)} (shared machine: noisy).`,
    '',
    'One client, one HTTP/2 connection (as kube-apiserver dials its plugin); each Encrypt+Decrypt pair',
    "counts as 2 RPCs and each RPC gets half the pair's latency. The server is `atrest serve --backend",
    'keyring --log-level warn` in its own process; its CPU time comes from /proc/<pid>/stat. Client and',
    'server share the same cores, so RPC/s is bounded by both.',
    '',
    table,
    '',
  ].join('\n');
  await mkdir(join(RESULTS, '..'), { recursive: true });
  await writeFile(RESULTS, section);
  process.stdout.write(section);
}

main().catch((err: unknown) => {
  process.stderr.write(`plugin bench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exitCode = 1;
});
