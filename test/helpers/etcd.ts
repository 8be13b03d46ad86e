// Starts a real etcd (built by scripts/setup/10-etcd.sh) for a test: 127.0.0.1, random free ports, a
// temporary data directory; waits until it answers; stop() kills it and removes everything. A TLS
// variant generates a CA, a server and a client certificate with openssl.

import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';

export interface EtcdTlsFiles {
  readonly caFile: string;
  readonly certFile: string;
  readonly keyFile: string;
  readonly ca: Buffer;
  readonly cert: Buffer;
  readonly key: Buffer;
}

export interface RunningEtcd {
  /** e.g. http://127.0.0.1:40123 (https:// for the TLS variant) */
  readonly endpoint: string;
  readonly dataDir: string;
  readonly dir: string;
  readonly process: ChildProcess;
  /** Client certificate files for the TLS variant (also accepted by etcdctl). */
  readonly tls: EtcdTlsFiles | undefined;
  stop(): Promise<void>;
}

export function cacheBin(): string {
  return (
    process.env.ATREST_CACHE_BIN ??
    join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'atrest', 'bin')
  );
}

/** Path of an etcd binary (etcd, etcdctl, etcdutl): the setup script's build first, then PATH. */
export function etcdBinary(name: 'etcd' | 'etcdctl' | 'etcdutl'): string {
  const cached = join(cacheBin(), name);
  if (existsSync(cached)) return cached;
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  throw new Error(
    `${name} not found in ${cacheBin()} or PATH: run scripts/setup/10-etcd.sh (npm test does)`,
  );
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

/** A throwaway CA, a server certificate for 127.0.0.1/localhost and a client certificate. */
export function generateTls(dir: string): EtcdTlsFiles & { serverCert: string; serverKey: string } {
  const ext = join(dir, 'san.ext');
  writeFileSync(ext, 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n');
  const clientExt = join(dir, 'client.ext');
  writeFileSync(clientExt, 'extendedKeyUsage=clientAuth\n');
  openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt',
    '-days', '2', '-subj', '/CN=atrest-test-ca'], dir);
  openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr',
    '-subj', '/CN=127.0.0.1'], dir);
  openssl(['x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key',
    '-CAcreateserial', '-out', 'server.crt', '-days', '2', '-extfile', ext], dir);
  openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'client.key', '-out', 'client.csr',
    '-subj', '/CN=atrest-client'], dir);
  openssl(['x509', '-req', '-in', 'client.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key',
    '-CAcreateserial', '-out', 'client.crt', '-days', '2', '-extfile', clientExt], dir);
  const caFile = join(dir, 'ca.crt');
  const certFile = join(dir, 'client.crt');
  const keyFile = join(dir, 'client.key');
  return {
    caFile,
    certFile,
    keyFile,
    ca: readFileSync(caFile),
    cert: readFileSync(certFile),
    key: readFileSync(keyFile),
    serverCert: join(dir, 'server.crt'),
    serverKey: join(dir, 'server.key'),
  };
}

async function waitHealthy(endpoint: string, tls: EtcdTlsFiles | undefined, proc: ChildProcess, logs: () => string): Promise<void> {
  const dispatcher = new Agent({
    connect: tls ? { ca: tls.ca, cert: tls.cert, key: tls.key } : {},
  });
  const deadline = Date.now() + 20_000;
  try {
    while (Date.now() < deadline) {
      if (proc.exitCode !== null) throw new Error(`etcd exited with ${proc.exitCode}:\n${logs()}`);
      try {
        const res = await request(`${endpoint}/health`, { dispatcher });
        const body = await res.body.text();
        if (res.statusCode === 200 && body.includes('"health":"true"')) return;
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`etcd at ${endpoint} did not become healthy in 20s:\n${logs()}`);
  } finally {
    await dispatcher.close();
  }
}

export interface StartEtcdOptions {
  readonly tls?: boolean;
  /** Default true for tests (speed); the benchmark turns it off to measure real durability costs. */
  readonly unsafeNoFsync?: boolean;
}

export async function startEtcd(options: StartEtcdOptions = {}): Promise<RunningEtcd> {
  const bin = etcdBinary('etcd');
  const dir = mkdtempSync(join(tmpdir(), 'atrest-etcd-'));
  const dataDir = join(dir, 'data');
  const [clientPort, peerPort] = [await freePort(), await freePort()];
  const tlsFiles = options.tls ? generateTls(dir) : undefined;
  const scheme = tlsFiles ? 'https' : 'http';
  const endpoint = `${scheme}://127.0.0.1:${clientPort}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  const args = [
    '--name', 'atrest-test',
    '--data-dir', dataDir,
    '--listen-client-urls', endpoint,
    '--advertise-client-urls', endpoint,
    '--listen-peer-urls', peer,
    '--initial-advertise-peer-urls', peer,
    '--initial-cluster', `atrest-test=${peer}`,
    '--log-level', 'warn',
  ];
  if (options.unsafeNoFsync ?? true) args.push('--unsafe-no-fsync');
  if (tlsFiles) {
    args.push('--cert-file', tlsFiles.serverCert, '--key-file', tlsFiles.serverKey,
      '--trusted-ca-file', tlsFiles.caFile, '--client-cert-auth');
  }
  const proc = spawn(bin, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-4000);
  });
  const stop = async (): Promise<void> => {
    if (proc.exitCode === null && proc.signalCode === null) {
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGKILL');
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitHealthy(endpoint, tlsFiles, proc, () => stderr);
  } catch (err) {
    await stop();
    throw err;
  }
  return { endpoint, dataDir, dir, process: proc, tls: tlsFiles, stop };
}
