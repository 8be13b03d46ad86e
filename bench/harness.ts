// Shared pieces of the API-server benchmarks (startup, reencrypt, scan): the machine line, the N flag,
// process CPU and peak RSS from /proc, the two KMS plugins (atrest serve and the Go reference plugin),
// bulk Secret creation and a cheap /readyz poll. Not a benchmark itself (run.mjs runs *.bench.js only).

import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { CACHE_BIN } from '../test/api/control-plane.js';

/** bench/run.mjs runs every benchmark from the repository root. */
export const ROOT = process.cwd();
export const CLI = join(ROOT, 'dist', 'src', 'cli', 'main.js');

/** `--n 500` or `--n=500` on the command line, else the environment variable, else the default. */
export function flagN(envName: string, fallback: number): number {
  const argv = process.argv.slice(2);
  let raw: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--n') raw = argv[i + 1];
    else if (a.startsWith('--n=')) raw = a.slice(4);
  }
  raw ??= process.env[envName];
  const n = raw === undefined ? fallback : Number(raw);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`--n / ${envName} must be a positive integer, got ${raw}`);
  return n;
}

export function machineLine(): string {
  let go = 'go not on PATH';
  try {
    go = execFileSync('go', ['version'], { encoding: 'utf8' }).trim();
  } catch {
    // reported as missing
  }
  let kube = 'kube-apiserver ?';
  try {
    kube = execFileSync(join(CACHE_BIN, 'kube-apiserver'), ['--version'], { encoding: 'utf8' }).trim();
  } catch {
    // reported as unknown
  }
  return (
    `${cpus().length} × ${cpus()[0]?.model ?? 'unknown CPU'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, ` +
    `Node ${process.version}, ${go}, ${kube}`
  );
}

export function load(): string {
  return loadavg()
    .map((l) => l.toFixed(1))
    .join(' / ');
}

/** user+system CPU seconds of a live process (0 if it is gone). */
export function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
  } catch {
    return 0;
  }
}

export interface Timed {
  readonly seconds: number;
  /** Peak resident set of the command, KiB (GNU time's %M). */
  readonly maxRssKiB: number;
  readonly stdout: string;
}

/** Runs argv and writes its peak RSS (KiB) to argv[1]: Python's getrusage, where GNU time is missing. */
const PY_MAXRSS =
  'import resource,subprocess,sys\n' +
  'r=subprocess.run(sys.argv[2:])\n' +
  'open(sys.argv[1],"w").write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n' +
  'sys.exit(r.returncode)\n';

/**
 * Runs a command to completion and returns its wall time and peak RSS (GNU time's %M, or getrusage of
 * the child through python3 when /usr/bin/time is not installed); fails with its stderr on an exit
 * status not in `okStatus` (default [0]).
 */
export function timedRun(
  cmd: string,
  args: readonly string[],
  options: { readonly discardStdout?: boolean; readonly okStatus?: readonly number[] } = {},
): Timed {
  const out = join(tmpdir(), `atrest-bench-time-${process.pid}`);
  const [wrapper, wrapperArgs] = existsSync('/usr/bin/time')
    ? ['/usr/bin/time', ['-f', '%M', '-o', out, cmd, ...args]]
    : ['python3', ['-c', PY_MAXRSS, out, cmd, ...args]];
  const start = performance.now();
  const r = spawnSync(wrapper, wrapperArgs, {
    encoding: 'utf8',
    maxBuffer: 1 << 30,
    stdio: ['ignore', options.discardStdout === true ? 'ignore' : 'pipe', 'pipe'],
  });
  const seconds = (performance.now() - start) / 1000;
  if (r.status === null || !(options.okStatus ?? [0]).includes(r.status)) {
    throw new Error(`${cmd} ${args.join(' ')} exited ${r.status ?? r.signal}: ${(r.stderr ?? '').slice(-800)}`);
  }
  const maxRssKiB = Number(readFileSync(out, 'utf8').trim().split('\n').pop());
  rmSync(out, { force: true });
  return { seconds, maxRssKiB, stdout: r.stdout ?? '' };
}

export function writeSection(name: string, md: string): void {
  mkdirSync(join(ROOT, 'bench', 'results'), { recursive: true });
  writeFileSync(join(ROOT, 'bench', 'results', `${name}.md`), md);
  process.stdout.write(md);
}

// ---------------------------------------------------------------------------------------------------
// KMS plugins

export type PluginKind = 'atrest' | 'go';

export interface RunningPlugin {
  readonly kind: PluginKind;
  readonly label: string;
  readonly endpoint: string;
  readonly pid: number;
  stop(): Promise<void>;
}

export function refPluginBinary(): string {
  const found = existsSync(CACHE_BIN) ? readdirSync(CACHE_BIN).filter((f) => f.startsWith('atrest-refplugin-')).sort() : [];
  if (found.length === 0) {
    throw new Error(`no atrest-refplugin-* in ${CACHE_BIN}: run scripts/setup/50-go-conformance.sh`);
  }
  return join(CACHE_BIN, found[found.length - 1]!);
}

/** Starts a plugin on a fresh keyring in `dir` and waits for its socket. */
export async function startPlugin(kind: PluginKind, dir: string): Promise<RunningPlugin> {
  mkdirSync(dir, { recursive: true });
  const keyring = join(dir, `${kind}-keyring.json`);
  const socket = join(dir, `${kind}.sock`);
  let child: ChildProcess;
  if (kind === 'atrest') {
    execFileSync(process.execPath, [CLI, 'keys', 'init', '--keyring', keyring], { stdio: 'ignore' });
    child = spawn(
      process.execPath,
      [CLI, 'serve', '--listen', `unix://${socket}`, '--keyring', keyring, '--health-listen', 'off', '--log-level', 'warn'],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
  } else {
    const bin = refPluginBinary();
    execFileSync(bin, ['keys', 'init', '--keyring', keyring], { stdio: 'ignore' });
    child = spawn(
      bin,
      ['serve', '--listen', `unix://${socket}`, '--keyring', keyring, '--health-listen', 'off', '--log-level', 'error'],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
  }
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-2000)));
  const deadline = Date.now() + 20_000;
  while (!existsSync(socket)) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`${kind} plugin did not create its socket: ${stderr.trim()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    kind,
    label: kind === 'atrest' ? '`atrest serve` (keyring)' : 'Go reference plugin (conformance/refplugin)',
    endpoint: `unix://${socket}`,
    pid: child.pid!,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
        setTimeout(() => child.kill('SIGKILL'), 5000).unref();
      }),
  };
}

// ---------------------------------------------------------------------------------------------------
// The API server

export interface KubeAccess {
  readonly server: URL;
  readonly ca: Buffer;
  readonly token: string;
}

/** The server, CA and token of the kubeconfig test/api/control-plane.ts writes. */
export function kubeAccess(kubeconfig: string): KubeAccess {
  const text = readFileSync(kubeconfig, 'utf8');
  const get = (re: RegExp): string => {
    const m = re.exec(text);
    if (!m) throw new Error(`${kubeconfig}: no ${re}`);
    return m[1]!.trim();
  };
  return {
    server: new URL(get(/server:\s*(\S+)/)),
    ca: readFileSync(get(/certificate-authority:\s*(\S+)/)),
    token: get(/token:\s*(\S+)/),
  };
}

/** One GET; resolves with the HTTP status, 0 when the server cannot be reached. */
export function httpGetStatus(access: KubeAccess, path: string): Promise<number> {
  return new Promise((resolve) => {
    const req = request(
      {
        host: access.server.hostname,
        port: access.server.port,
        path,
        method: 'GET',
        ca: access.ca,
        headers: { authorization: `Bearer ${access.token}` },
        agent: false,
        timeout: 5000,
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
        res.on('error', () => resolve(0));
      },
    );
    req.on('error', () => resolve(0));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}

/** Polls /readyz every `pollMs` until it answers 200; fails if the API server exits or after `timeoutMs`. */
export async function waitReady(
  access: KubeAccess,
  alive: () => boolean,
  timeoutMs = 600_000,
  pollMs = 50,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if ((await httpGetStatus(access, '/readyz')) === 200) return;
    if (!alive()) throw new Error('kube-apiserver exited while starting');
    if (Date.now() > deadline) throw new Error(`kube-apiserver not ready after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

export function runAsync(cmd: string, args: readonly string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err = (err + d).slice(-2000)));
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args.slice(0, 3).join(' ')} exited ${code}: ${err.trim()}`)),
    );
    child.stdin.end(input ?? '');
  });
}

export const NAMESPACES = 10;

/**
 * Creates `n` Secrets of about 1 KiB of data, spread over NAMESPACES namespaces, with `parallel` kubectl
 * processes each creating a List (every create is one write through the API server, so one encryption).
 */
export async function createSecrets(kubeconfig: string, n: number, parallel = 4): Promise<void> {
  const kubectl = join(CACHE_BIN, 'kubectl');
  const nsList = {
    apiVersion: 'v1',
    kind: 'List',
    items: Array.from({ length: NAMESPACES }, (_, i) => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: `bench-${i}` } })),
  };
  await runAsync(kubectl, [`--kubeconfig=${kubeconfig}`, 'apply', '-f', '-'], JSON.stringify(nsList));
  const chunks: object[][] = Array.from({ length: parallel }, () => []);
  for (let i = 0; i < n; i++) {
    chunks[i % parallel]!.push({
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: `s-${String(i).padStart(6, '0')}`, namespace: `bench-${i % NAMESPACES}` },
      type: 'Opaque',
      data: { payload: randomBytes(1024).toString('base64') },
    });
  }
  await Promise.all(
    chunks
      .filter((c) => c.length > 0)
      .map((items) =>
        runAsync(kubectl, [`--kubeconfig=${kubeconfig}`, 'create', '-o', 'name', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items })),
      ),
  );
}
