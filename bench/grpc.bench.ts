// Benchmark of the gRPC transport (src/grpc/): RPC/s, p50/p99 latency and the *server's* CPU seconds
// per 10,000 unary RPCs at concurrency 1, 16 and 64, for our lean HTTP/2 server (with the `localhost`
// :authority of current clients and the raw socket path of old grpc-go ones) and -- as the reference in
// the same run -- the Go reference plugin (grpc-go) answering the same v1beta1 Version RPC. Each server runs in its own process; its CPU comes from /proc/PID/stat.
// Also a paced run at 1,000 RPC/s. Writes bench/results/grpc.md.
//
//   npm run bench -- grpc          (or: npx tsc -p . && node dist/bench/grpc.bench.js)

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import net from 'node:net';
import { cpus, homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createGrpcClient, type GrpcClient } from '../src/grpc/client.js';
import { createGrpcServer } from '../src/grpc/server.js';
import { V1BETA1_METHODS, VersionRequest, VersionResponse } from '../src/proto/kms-v1beta1.js';

const RPCS = 10_000;
const WARMUP = 1_000;
const CONCURRENCY = [1, 16, 64];
const PACED_RATE = 1_000;
const PACED_SECONDS = 5;

// --- measurement ---

const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK']).stdout?.toString().trim() || 100);

function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK; // utime + stime
}

function percentile(sorted: Float64Array, p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

interface Row {
  server: string;
  load: string;
  rps: number;
  p50: number;
  p99: number;
  cpuPer10k: number;
}

async function closedLoop(client: GrpcClient, method: string, body: Uint8Array, n: number, concurrency: number) {
  const lat = new Float64Array(n);
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (;;) {
        const i = next++;
        if (i >= n) return;
        const t = performance.now();
        await client.unary(method, body, { timeoutMs: 10_000 });
        lat[i] = performance.now() - t;
      }
    }),
  );
  const wall = (performance.now() - started) / 1000;
  lat.sort();
  return { rps: n / wall, p50: percentile(lat, 0.5), p99: percentile(lat, 0.99) };
}

async function paced(client: GrpcClient, method: string, body: Uint8Array, rate: number, seconds: number) {
  const n = rate * seconds;
  const lat = new Float64Array(n);
  const started = performance.now();
  const calls: Promise<void>[] = [];
  for (let i = 0; i < n; i++) {
    const due = started + (i * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    const t = performance.now();
    calls.push(
      client.unary(method, body, { timeoutMs: 10_000 }).then(() => {
        lat[i] = performance.now() - t;
      }),
    );
  }
  await Promise.all(calls);
  const wall = (performance.now() - started) / 1000;
  lat.sort();
  return { rps: n / wall, p50: percentile(lat, 0.5), p99: percentile(lat, 0.99) };
}

async function waitForSocket(address: string, child: ChildProcess): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(address);
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`server at ${address} never came up`);
}

function findRefPlugin(): string | undefined {
  const bin = process.env.ATREST_CACHE_BIN ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'atrest', 'bin');
  if (!existsSync(bin)) return undefined;
  const found = readdirSync(bin).filter((f) => f.startsWith('atrest-refplugin-')).sort();
  return found.length > 0 ? join(bin, found[found.length - 1]!) : undefined;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'atrest-bench-grpc-'));
  const self = fileURLToPath(import.meta.url);
  const refplugin = findRefPlugin();
  const atrest = (name: string, authority?: string) => ({
    name,
    ...(authority === undefined ? {} : { authority }),
    start: (a: string) => spawn(process.execPath, [self, '--serve', a], { stdio: 'ignore' }),
  });
  const servers: { name: string; start: (address: string) => ChildProcess; authority?: string }[] = [
    atrest('atrest lean HTTP/2 server'),
    atrest('atrest lean, raw-path :authority', '/var/run/kms.sock'),
  ];
  if (refplugin !== undefined) {
    const keyring = join(dir, 'ref-keyring.json');
    const init = spawnSync(refplugin, ['keys', 'init', '--keyring', keyring]);
    if (init.status === 0) {
      servers.push({
        name: 'reference: grpc-go (conformance/refplugin)',
        start: (a) => spawn(refplugin, ['serve', '--listen', `unix://${a}`, '--keyring', keyring, '--health-listen', 'off', '--log-level', 'error'], { stdio: 'ignore' }),
      });
    }
  }

  const rows: Row[] = [];
  const body = VersionRequest.encode({ version: 'v1beta1' });
  try {
    for (const [i, s] of servers.entries()) {
      const address = join(dir, `s${i}.sock`);
      const child = s.start(address);
      try {
        await waitForSocket(address, child);
        const client = createGrpcClient({ address, ...(s.authority === undefined ? {} : { authority: s.authority }) });
        await closedLoop(client, V1BETA1_METHODS.version, body, WARMUP, 16);
        for (const c of CONCURRENCY) {
          const cpu0 = cpuSeconds(child.pid!);
          const r = await closedLoop(client, V1BETA1_METHODS.version, body, RPCS, c);
          const cpu = cpuSeconds(child.pid!) - cpu0;
          rows.push({ server: s.name, load: `concurrency ${c}`, ...r, cpuPer10k: (cpu * 10_000) / RPCS });
          console.log(JSON.stringify(rows[rows.length - 1]));
        }
        const cpu0 = cpuSeconds(child.pid!);
        const r = await paced(client, V1BETA1_METHODS.version, body, PACED_RATE, PACED_SECONDS);
        const cpu = cpuSeconds(child.pid!) - cpu0;
        rows.push({ server: s.name, load: `paced ${PACED_RATE} RPC/s`, ...r, cpuPer10k: (cpu * 10_000) / (PACED_RATE * PACED_SECONDS) });
        console.log(JSON.stringify(rows[rows.length - 1]));
        await client.close();
      } finally {
        child.kill('SIGTERM');
        await new Promise((r) => (child.exitCode !== null ? r(undefined) : child.once('exit', r)));
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }

  const goVersion = spawnSync('go', ['version']).stdout?.toString().trim() || 'go not on PATH';
  const lines = [
    '## gRPC transport (src/grpc/)',
    '',
    'Command: `npm run bench -- grpc` (runs `node dist/bench/grpc.bench.js`).',
    `Machine: ${cpus().length} × ${cpus()[0]?.model ?? 'unknown CPU'}, Node ${process.version}, ${goVersion}.`,
    '',
    `Unary v1beta1 \`Version\` RPCs over a UNIX socket from one Node client (src/grpc/client.ts, one HTTP/2`,
    `connection); ${RPCS.toLocaleString('en')} RPCs per closed-loop row after ${WARMUP} warm-up calls, and an open-loop row`,
    `at ${PACED_RATE} RPC/s for ${PACED_SECONDS} s. Server CPU = user+system time of the server process (/proc), scaled`,
    'to 10,000 RPCs. The client shares the same cores, so RPC/s is bounded by the client too; the server CPU',
    'column is the number to compare. Reference in the same run: the grpc-go reference plugin',
    `(conformance/refplugin)${refplugin === undefined ? ' — NOT FOUND in $ATREST_CACHE_BIN in this run' : ''}.`,
    '',
    '| server | load | RPC/s | p50 ms | p99 ms | server CPU s / 10k RPCs |',
    '|---|---|---:|---:|---:|---:|',
    ...rows.map(
      (r) => `| ${r.server} | ${r.load} | ${r.rps.toFixed(0)} | ${r.p50.toFixed(3)} | ${r.p99.toFixed(3)} | ${r.cpuPer10k.toFixed(2)} |`,
    ),
    '',
  ];
  const out = join(process.cwd(), 'bench', 'results', 'grpc.md'); // benches run from the repo root
  writeFileSync(out, lines.join('\n'));
  console.log(`wrote ${out}`);
}

// --- server mode: `node grpc.bench.js --serve ADDRESS` ---

function serve(): void {
  const address = process.argv[3]!;
  const version = VersionResponse.encode({ version: 'v1beta1', runtime_name: 'bench', runtime_version: '0' });
  const server = createGrpcServer({
    maxMessageBytes: 64 * 1024,
    handlers: new Map([
      [V1BETA1_METHODS.version, async () => version],
      ['/bench.Echo/Echo', async (call) => call.message],
    ]),
  });
  const listener = net.createServer((s) => server.handleConnection(s));
  listener.listen(address, () => process.stdout.write('ready\n'));
  process.on('SIGTERM', () => {
    listener.close();
    void server.close(0).then(() => process.exit(0));
  });
}

if (process.argv[2] === '--serve') serve();
else await main();
