// Test helper (no tests here): a real etcd + kube-apiserver on 127.0.0.1 with random free ports, a
// self-made CA/serving cert, a static admin token and a kubeconfig, all in one temp dir. Binaries come
// from $ATREST_CACHE_BIN (scripts/setup/10-etcd.sh, scripts/setup/60-kube-apiserver.sh).

import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, openSync, readFileSync, writeFileSync, closeSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

export const CACHE_BIN =
  process.env['ATREST_CACHE_BIN'] ??
  join(process.env['XDG_CACHE_HOME'] ?? join(homedir(), '.cache'), 'atrest', 'bin');

export interface ControlPlane {
  readonly dir: string;
  readonly etcdUrl: string;
  readonly kubeconfig: string;
  /**
   * Stops the API server (if running) and starts it with this encryption config (none: no encryption);
   * waits until it is ready (options.until) unless options.wait is false (benchmarks time readiness).
   */
  restartApiserver(encryptionConfig?: string, options?: ApiserverOptions): Promise<void>;
  /** The running API server's process id (for /proc CPU accounting in benchmarks). */
  apiserverPid(): number | undefined;
  kubectl(args: readonly string[], input?: string): string;
  etcdctl(args: readonly string[]): string;
  stop(): Promise<void>;
}

export interface ApiserverOptions {
  /** More kube-apiserver flags, e.g. `--feature-gates=KMSv1=true`. */
  readonly extraArgs?: readonly string[];
  /**
   * What "started" means: `ready` (default) waits for /readyz; `serving` only for requests to be
   * served (a KMS plugin down on purpose keeps /readyz failing).
   */
  readonly until?: 'ready' | 'serving';
  /** false: return once started; the caller times readiness itself (benchmarks). */
  readonly wait?: boolean;
}

export function requireBinaries(): void {
  for (const b of ['etcd', 'etcdctl', 'kube-apiserver', 'kubectl']) {
    if (!existsSync(join(CACHE_BIN, b))) {
      throw new Error(
        `${join(CACHE_BIN, b)} is missing: run scripts/setup/10-etcd.sh and scripts/setup/60-kube-apiserver.sh (npm test does)`,
      );
    }
  }
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      s.close(() => resolve(typeof addr === 'object' && addr !== null ? addr.port : 0));
    });
  });
}

async function waitUntil(
  what: string,
  timeoutMs: number,
  check: () => boolean,
  alive?: ChildProcess,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (check()) return;
    if (alive !== undefined && alive.exitCode !== null)
      throw new Error(`${what}: the process exited (${alive.exitCode})`);
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 300));
  }
}

function stopChild(child: ChildProcess | undefined): Promise<void> {
  if (child === undefined || child.exitCode !== null || child.signalCode !== null)
    return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

export interface ControlPlaneOptions {
  /** kube-apiserver's watch cache (default off: lists then come from etcd, see below). */
  readonly watchCache?: boolean;
  /** --feature-gates, e.g. 'KMSv1=true'. */
  readonly featureGates?: string;
}

/**
 * The files a test kube-apiserver needs in `dir`: a CA (ca.crt), a serving certificate for 127.0.0.1
 * (server.crt/key), the service-account key pair (sa.key/pub) and a static admin token (tokens.csv).
 */
export function makeApiserverPki(dir: string, admin: string): { ca: Buffer; token: string } {
  const ssl = (args: string[]): void => {
    execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  };
  ssl([
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-days',
    '2',
    '-subj',
    '/CN=atrest-test-ca',
    '-keyout',
    'ca.key',
    '-out',
    'ca.crt',
  ]);
  ssl([
    'req',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-subj',
    '/CN=kube-apiserver',
    '-keyout',
    'server.key',
    '-out',
    'server.csr',
  ]);
  writeFileSync(join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  ssl([
    'x509',
    '-req',
    '-in',
    'server.csr',
    '-CA',
    'ca.crt',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-days',
    '2',
    '-extfile',
    'san.ext',
    '-out',
    'server.crt',
  ]);
  ssl(['genrsa', '-out', 'sa.key', '2048']);
  ssl(['rsa', '-in', 'sa.key', '-pubout', '-out', 'sa.pub']);
  const token = randomBytes(24).toString('hex');
  writeFileSync(join(dir, 'tokens.csv'), `${token},${admin},${admin}-uid,"system:masters"\n`, {
    mode: 0o600,
  });
  return { ca: readFileSync(join(dir, 'ca.crt')), token };
}

/** A one-member etcd on random loopback ports with its data and log in `dir` (not yet waited for). */
export async function spawnTestEtcd(dir: string, name: string): Promise<{ process: ChildProcess; url: string }> {
  const [clientPort, peerPort] = [await freePort(), await freePort()];
  const url = `http://127.0.0.1:${clientPort}`;
  const peerUrl = `http://127.0.0.1:${peerPort}`;
  const logFd = openSync(join(dir, 'etcd.log'), 'a');
  const child = spawn(
    join(CACHE_BIN, 'etcd'),
    [
      `--name=${name}`,
      `--data-dir=${join(dir, 'etcd')}`,
      `--listen-client-urls=${url}`,
      `--advertise-client-urls=${url}`,
      `--listen-peer-urls=${peerUrl}`,
      `--initial-advertise-peer-urls=${peerUrl}`,
      `--initial-cluster=${name}=${peerUrl}`,
      '--log-level=warn',
    ],
    { stdio: ['ignore', logFd, logFd] },
  );
  closeSync(logFd);
  return { process: child, url };
}

export async function startControlPlane(cpOptions: ControlPlaneOptions = {}): Promise<ControlPlane> {
  requireBinaries();
  const dir = await mkdtemp(join(tmpdir(), 'atrest-api-'));
  const bin = (b: string): string => join(CACHE_BIN, b);
  const apiPort = await freePort();
  const { process: etcd, url: etcdUrl } = await spawnTestEtcd(dir, 't');
  let apiserver: ChildProcess | undefined;

  const etcdctl = (args: readonly string[]): string =>
    execFileSync(bin('etcdctl'), [`--endpoints=${etcdUrl}`, ...args], { encoding: 'utf8' });
  const kubeconfig = join(dir, 'kubeconfig');
  const kubectl = (args: readonly string[], input?: string): string =>
    execFileSync(bin('kubectl'), [`--kubeconfig=${kubeconfig}`, ...args], {
      encoding: 'utf8',
      ...(input === undefined ? {} : { input }),
      stdio: ['pipe', 'pipe', 'pipe'],
    });

  const stop = async (): Promise<void> => {
    await stopChild(apiserver);
    await stopChild(etcd);
    await rm(dir, { recursive: true, force: true });
  };

  try {
    await waitUntil(
      'etcd',
      30_000,
      () => {
        try {
          etcdctl(['endpoint', 'health']);
          return true;
        } catch {
          return false;
        }
      },
      etcd,
    );

    const { token } = makeApiserverPki(dir, 'test-admin');
    writeFileSync(
      kubeconfig,
      [
        'apiVersion: v1',
        'kind: Config',
        'clusters:',
        '- name: t',
        '  cluster:',
        `    server: https://127.0.0.1:${apiPort}`,
        `    certificate-authority: ${join(dir, 'ca.crt')}`,
        'users:',
        '- name: admin',
        '  user:',
        `    token: ${token}`,
        'contexts:',
        '- name: t',
        '  context: {cluster: t, user: admin}',
        'current-context: t',
        '',
      ].join('\n'),
      { mode: 0o600 },
    );
  } catch (err) {
    await stop();
    throw err;
  }

  const restartApiserver = async (
    encryptionConfig?: string,
    options: ApiserverOptions = {},
  ): Promise<void> => {
    await stopChild(apiserver);
    const fd = openSync(join(dir, 'apiserver.log'), 'a');
    const child = spawn(
      bin('kube-apiserver'),
      [
        '--bind-address=127.0.0.1',
        '--advertise-address=127.0.0.1',
        // a loopback advertise address is only allowed without the kubernetes Service endpoint reconciler
        '--endpoint-reconciler-type=none',
        `--secure-port=${apiPort}`,
        `--tls-cert-file=${join(dir, 'server.crt')}`,
        `--tls-private-key-file=${join(dir, 'server.key')}`,
        `--token-auth-file=${join(dir, 'tokens.csv')}`,
        '--authorization-mode=RBAC',
        '--anonymous-auth=false',
        '--service-account-issuer=https://kubernetes.default.svc',
        `--service-account-key-file=${join(dir, 'sa.pub')}`,
        `--service-account-signing-key-file=${join(dir, 'sa.key')}`,
        '--service-cluster-ip-range=10.96.0.0/16',
        `--etcd-servers=${etcdUrl}`,
        '--enable-priority-and-fairness=false',
        '--profiling=false',
        // lists and continue tokens come from etcd, so compacting etcd expires them (410 Gone)
        `--watch-cache=${cpOptions.watchCache === true}`,
        ...(cpOptions.featureGates === undefined ? [] : [`--feature-gates=${cpOptions.featureGates}`]),
        ...(encryptionConfig === undefined
          ? []
          : [`--encryption-provider-config=${encryptionConfig}`]),
        ...(options.extraArgs ?? []),
      ],
      { stdio: ['ignore', fd, fd] },
    );
    closeSync(fd);
    apiserver = child;
    if (options.wait === false) return;
    try {
      await waitUntil(
        'kube-apiserver /readyz',
        120_000,
        () => {
          try {
            if (options.until !== 'serving') kubectl(['get', '--raw', '/readyz']);
            kubectl(['get', 'namespace', 'default']);
            return true;
          } catch {
            return false;
          }
        },
        child,
      );
    } catch (err) {
      const log = readFileSync(join(dir, 'apiserver.log'), 'utf8')
        .split('\n')
        .slice(-12)
        .join('\n');
      throw new Error(`${(err as Error).message}; last lines of apiserver.log:\n${log}`);
    }
  };

  const apiserverPid = (): number | undefined =>
    apiserver !== undefined && apiserver.exitCode === null ? apiserver.pid : undefined;

  return { dir, etcdUrl, kubeconfig, restartApiserver, apiserverPid, kubectl, etcdctl, stop };
}

/** Every stored value under the prefix: etcd key -> its first bytes, as latin1 (prefixes are ASCII). */
export function storedPrefixes(cp: ControlPlane, prefix: string, bytes = 24): Map<string, string> {
  const out = JSON.parse(cp.etcdctl(['get', '--prefix', prefix, '-w', 'json'])) as {
    kvs?: { key: string; value: string }[];
  };
  const map = new Map<string, string>();
  for (const kv of out.kvs ?? []) {
    map.set(
      Buffer.from(kv.key, 'base64').toString('utf8'),
      Buffer.from(kv.value, 'base64').subarray(0, bytes).toString('latin1'),
    );
  }
  return map;
}
