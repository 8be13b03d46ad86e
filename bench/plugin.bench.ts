// Benchmark of the KMS plugin over its UNIX socket: Encrypt+Decrypt pairs (v1beta1 and v2) at
// concurrency 1, 16 and 64 on one HTTP/2 connection (as kube-apiserver uses one), reporting RPC/s,
// p50/p99 latency and the server process's CPU seconds per 10,000 RPCs (from /proc/<pid>/stat).
// References measured in the same run: the keyring backend's wrap+unwrap in-process (no transport)
// and the v1 Version RPC (transport only). Writes bench/results/plugin.md.
//
//   npm run bench -- plugin            (or: node dist/bench/plugin.bench.js [--seconds N])

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFileSync } from 'node:child_process';
import * as v1 from '../src/proto/kms-v1beta1.js';
import * as v2 from '../src/proto/kms-v2.js';
import { createGrpcClient, type GrpcClient } from '../src/grpc/client.js';
import { createKeyring, writeKeyringFile } from '../src/backends/keyring-file.js';
import { createKeyringBackend } from '../src/backends/keyring.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
/** bench/run.mjs runs every benchmark from the repository root. */
const RESULTS = join(process.cwd(), 'bench', 'results', 'plugin.md');
const secondsArg = process.argv.indexOf('--seconds');
const SECONDS = secondsArg > 0 ? Number(process.argv[secondsArg + 1]) : 4;
const T = { timeoutMs: 10_000 };

interface Row {
  readonly name: string;
  readonly concurrency: number;
  readonly rpcs: number;
  readonly rpcPerSec: number;
  readonly p50ms: number;
  readonly p99ms: number;
  readonly cpuPer10k: number | undefined;
}

function clockTicks(): number {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
}
const TICKS = clockTicks();

/** utime + stime of a process, in seconds (fields 14 and 15 of /proc/<pid>/stat). */
async function cpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / TICKS;
}

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

type Op = () => Promise<number>;

/** Runs `op` (which returns how many RPCs it made) with `concurrency` workers for SECONDS. */
async function drive(
  op: Op,
  concurrency: number,
  pid: number | undefined,
  seconds = SECONDS,
): Promise<Omit<Row, 'name'>> {
  const warmUntil = performance.now() + 500;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < warmUntil) await op();
    }),
  );
  const latencies: number[] = [];
  let rpcs = 0;
  const cpuBefore = pid === undefined ? 0 : await cpuSeconds(pid);
  const started = performance.now();
  const until = started + seconds * 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < until) {
        const t0 = performance.now();
        const n = await op();
        const per = (performance.now() - t0) / n;
        for (let i = 0; i < n; i++) latencies.push(per);
        rpcs += n;
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  const cpu = pid === undefined ? undefined : (await cpuSeconds(pid)) - cpuBefore;
  latencies.sort((a, b) => a - b);
  return {
    concurrency,
    rpcs,
    rpcPerSec: rpcs / elapsed,
    p50ms: percentile(latencies, 50),
    p99ms: percentile(latencies, 99),
    cpuPer10k: cpu === undefined ? undefined : (cpu / rpcs) * 10_000,
  };
}

function v1Pair(c: GrpcClient): Op {
  const dek = randomBytes(32);
  return async () => {
    const enc = v1.EncryptResponse.decode(
      await c.unary(
        v1.V1BETA1_METHODS.encrypt,
        v1.EncryptRequest.encode({ version: 'v1beta1', plain: dek }),
        T,
      ),
    );
    await c.unary(
      v1.V1BETA1_METHODS.decrypt,
      v1.DecryptRequest.encode({ version: 'v1beta1', cipher: enc.cipher }),
      T,
    );
    return 2;
  };
}

function v2Pair(c: GrpcClient): Op {
  const seed = randomBytes(32);
  const uid = '6f1e0a4c-8d2b-4c3e-9f5a-7b6c5d4e3f2a';
  return async () => {
    const enc = v2.EncryptResponse.decode(
      await c.unary(v2.V2_METHODS.encrypt, v2.EncryptRequest.encode({ plaintext: seed, uid }), T),
    );
    await c.unary(
      v2.V2_METHODS.decrypt,
      v2.DecryptRequest.encode({
        ciphertext: enc.ciphertext,
        uid,
        key_id: enc.key_id,
        annotations: {},
      }),
      T,
    );
    return 2;
  };
}

function versionOnly(c: GrpcClient): Op {
  const req = v1.VersionRequest.encode({ version: 'v1beta1' });
  return async () => {
    await c.unary(v1.V1BETA1_METHODS.version, req, T);
    return 1;
  };
}

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
