// Test harness (no tests here): an HA control plane on 127.0.0.1 — one real etcd and two real
// kube-apiservers ("nodes" a and b) sharing it, each node with its own directory standing for its
// filesystem (its keyring copy, its plugin socket, its EncryptionConfiguration) and its own
// `atrest serve`. Binaries come from $ATREST_CACHE_BIN (scripts/setup/10-etcd.sh, 60-kube-apiserver.sh).

import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { request as httpsRequest, Agent } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CACHE_BIN, freePort, makeApiserverPki, spawnTestEtcd } from '../../test/api/control-plane.js';

export type NodeName = 'a' | 'b';
export const NODES: readonly NodeName[] = ['a', 'b'];

/** The recorded runbook sessions worked in /tmp/rb; on this harness each node's /tmp/rb is its own dir. */
export const DOC_NODE_ROOT = '/tmp/rb/';

const CLI = join(import.meta.dirname, '..', '..', 'src', 'cli', 'main.js');

export interface ApiReply {
  readonly status: number;
  readonly body: string;
}

export interface Node {
  readonly name: NodeName;
  /** This node's /tmp/rb (ends with '/'). */
  readonly root: string;
  readonly apiPort: number;
  readonly healthPort: number;
  apiserverRunning(): boolean;
  /** One HTTPS call to this node's kube-apiserver as the admin; network errors reject. */
  api(method: string, path: string, body?: unknown): Promise<ApiReply>;
}

export interface Cluster {
  readonly dir: string;
  readonly etcdUrl: string;
  readonly nodes: Readonly<Record<NodeName, Node>>;
  /** Environment for commands run "on a node": PATH with `atrest`, etcdctl; ETCDCTL_ENDPOINTS. */
  readonly env: NodeJS.ProcessEnv;
  /** Rewrites node a's paths in `text` to `node`'s (a config written on a, deployed on another node). */
  toNode(text: string, node: NodeName): string;
  /** (Re)starts the node's kube-apiserver with this config file (a path on that node) and waits for /readyz. */
  startApiserver(node: NodeName, config: string | undefined): Promise<void>;
  stopApiserver(node: NodeName): Promise<void>;
  startPlugin(node: NodeName): Promise<void>;
  /** SIGHUP, then waits for the plugin's log line saying how the reload went. */
  reloadPlugin(node: NodeName): Promise<'ok' | 'failed'>;
  pluginLog(node: NodeName): string;
  pluginMetrics(node: NodeName): Promise<string>;
  etcdctl(args: readonly string[]): string;
  stop(): Promise<void>;
}

function stopChild(child: ChildProcess | undefined): Promise<void> {
  if (child === undefined || child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve();
  }
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/** Polls `check` (each poll is a real request, not a timer race) until it passes. */
async function waitUntil(
  what: string,
  timeoutMs: number,
  check: () => Promise<boolean>,
  alive?: ChildProcess,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (alive !== undefined && alive.exitCode !== null) {
      throw new Error(`${what}: the process exited (${alive.exitCode})`);
    }
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

export async function startCluster(): Promise<Cluster> {
  for (const b of ['etcd', 'etcdctl', 'kube-apiserver']) {
    if (!existsSync(join(CACHE_BIN, b))) {
      throw new Error(
        `${join(CACHE_BIN, b)} is missing: run scripts/setup/10-etcd.sh and ` +
          'scripts/setup/60-kube-apiserver.sh (npm test does)',
      );
    }
  }
  const dir = await mkdtemp(join(tmpdir(), 'atrest-ha-'));
  const bin = (b: string): string => join(CACHE_BIN, b);
  const pki = join(dir, 'pki');
  mkdirSync(pki);
  // `atrest` on PATH for the runbook commands, as an operator has it installed.
  const shims = join(dir, 'bin');
  mkdirSync(shims);
  writeFileSync(
    join(shims, 'atrest'),
    `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(CLI)} "$@"\n`,
    { mode: 0o755 },
  );

  const { process: etcd, url: etcdUrl } = await spawnTestEtcd(dir, 'ha');
  const etcdctl = (args: readonly string[]): string =>
    execFileSync(bin('etcdctl'), [`--endpoints=${etcdUrl}`, ...args], { encoding: 'utf8' });

  const apiservers = new Map<NodeName, ChildProcess>();
  const plugins = new Map<NodeName, { child: ChildProcess; log: () => string }>();
  const agents = new Map<NodeName, Agent>();
  const stop = async (): Promise<void> => {
    await Promise.all(NODES.map((n) => stopChild(apiservers.get(n))));
    await Promise.all(NODES.map((n) => stopChild(plugins.get(n)?.child)));
    await stopChild(etcd);
    for (const a of agents.values()) a.destroy();
    if (process.env['ATREST_HA_KEEP'] === undefined)
      await rm(dir, { recursive: true, force: true });
    else process.stderr.write(`ha: work dir kept: ${dir}\n`);
  };

  let ca: Buffer;
  let token: string;
  const nodes = {} as Record<NodeName, Node>;
  try {
    await waitUntil(
      'etcd',
      30_000,
      async () => {
        try {
          etcdctl(['endpoint', 'health']);
          return true;
        } catch {
          return false;
        }
      },
      etcd,
    );
    ({ ca, token } = makeApiserverPki(pki, 'ha-admin'));
    for (const name of NODES) {
      const root = join(dir, name) + '/';
      mkdirSync(root, { mode: 0o700 });
      const apiPort = await freePort();
      const healthPort = await freePort();
      // The node's admin kubeconfig, where the runbooks' `--kubeconfig /tmp/rb/admin.conf` finds it.
      writeFileSync(
        join(root, 'admin.conf'),
        [
          'apiVersion: v1',
          'kind: Config',
          `clusters: [{name: ha, cluster: {server: "https://127.0.0.1:${apiPort}", certificate-authority: "${join(pki, 'ca.crt')}"}}]`,
          `users: [{name: admin, user: {token: "${token}"}}]`,
          'contexts: [{name: ha, context: {cluster: ha, user: admin}}]',
          'current-context: ha',
          '',
        ].join('\n'),
        { mode: 0o600 },
      );
      const agent = (): Agent => {
        let a = agents.get(name);
        if (a === undefined) {
          a = new Agent({ keepAlive: true, maxSockets: 4, ca });
          agents.set(name, a);
        }
        return a;
      };
      nodes[name] = {
        name,
        root,
        apiPort,
        healthPort,
        apiserverRunning: () => {
          const c = apiservers.get(name);
          return c !== undefined && c.exitCode === null && c.signalCode === null;
        },
        api: (method, path, body) =>
          new Promise<ApiReply>((resolve, reject) => {
            const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
            const req = httpsRequest(
              {
                host: '127.0.0.1',
                port: apiPort,
                method,
                path,
                agent: agent(),
                timeout: 30_000,
                headers: {
                  authorization: `Bearer ${token}`,
                  accept: 'application/json',
                  ...(payload === undefined
                    ? {}
                    : { 'content-type': 'application/json', 'content-length': payload.length }),
                },
              },
              (res) => {
                const chunks: Buffer[] = [];
                res.on('data', (c: Buffer) => chunks.push(c));
                res.on('end', () =>
                  resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }),
                );
                res.on('error', reject);
              },
            );
            req.on('timeout', () => req.destroy(new Error(`${method} ${path}: timed out`)));
            req.on('error', reject);
            req.end(payload);
          }),
      };
    }
  } catch (err) {
    await stop();
    throw err;
  }

  const startApiserver = async (node: NodeName, config: string | undefined): Promise<void> => {
    await stopChild(apiservers.get(node));
    agents.get(node)?.destroy();
    agents.delete(node);
    const n = nodes[node];
    const fd = openSync(join(dir, `apiserver-${node}.log`), 'a');
    writeFileSync(fd, `--- start ${new Date().toISOString()} config=${config ?? 'none'}\n`);
    const child = spawn(
      bin('kube-apiserver'),
      [
        '--bind-address=127.0.0.1',
        '--advertise-address=127.0.0.1',
        '--endpoint-reconciler-type=none',
        `--secure-port=${n.apiPort}`,
        `--tls-cert-file=${join(pki, 'server.crt')}`,
        `--tls-private-key-file=${join(pki, 'server.key')}`,
        `--token-auth-file=${join(pki, 'tokens.csv')}`,
        '--authorization-mode=RBAC',
        '--anonymous-auth=false',
        '--service-account-issuer=https://kubernetes.default.svc',
        `--service-account-key-file=${join(pki, 'sa.pub')}`,
        `--service-account-signing-key-file=${join(pki, 'sa.key')}`,
        '--service-cluster-ip-range=10.96.0.0/16',
        `--etcd-servers=${etcdUrl}`,
        '--enable-priority-and-fairness=false',
        '--profiling=false',
        // Every GET and LIST then reads etcd and decrypts: a read that would fail cannot hide in a cache.
        '--watch-cache=false',
        ...(config === undefined ? [] : [`--encryption-provider-config=${config}`]),
      ],
      { stdio: ['ignore', fd, fd] },
    );
    closeSync(fd);
    apiservers.set(node, child);
    try {
      await waitUntil(
        `kube-apiserver ${node} /readyz`,
        180_000,
        async () => {
          try {
            return (await n.api('GET', '/readyz')).status === 200;
          } catch {
            return false;
          }
        },
        child,
      );
    } catch (err) {
      const log = readFileSync(join(dir, `apiserver-${node}.log`), 'utf8')
        .split('\n')
        .slice(-15)
        .join('\n');
      throw new Error(`${(err as Error).message}; last lines of apiserver-${node}.log:\n${log}`);
    }
  };

  const countLines = (text: string, msg: string): number => text.split(`"msg":"${msg}"`).length - 1;

  const startPlugin = async (node: NodeName): Promise<void> => {
    await stopChild(plugins.get(node)?.child);
    const n = nodes[node];
    const child = spawn(
      process.execPath,
      [
        CLI,
        'serve',
        '--listen',
        `unix://${n.root}kms.sock`,
        '--keyring',
        `${n.root}keyring.json`,
        '--health-listen',
        `127.0.0.1:${n.healthPort}`,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let log = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      log += d;
      writeFileSync(join(dir, `plugin-${node}.log`), d, { flag: 'a' });
    });
    plugins.set(node, { child, log: () => log });
    await waitUntil(`plugin ${node}`, 30_000, async () => countLines(log, 'serving') > 0, child);
  };

  const pluginLog = (node: NodeName): string => plugins.get(node)?.log() ?? '';

  return {
    dir,
    etcdUrl,
    nodes,
    env: {
      ...process.env,
      PATH: `${shims}:${CACHE_BIN}:${process.env['PATH'] ?? ''}`,
      ETCDCTL_ENDPOINTS: etcdUrl,
    },
    toNode: (text, node) => text.split(nodes.a.root).join(nodes[node].root),
    startApiserver,
    stopApiserver: async (node) => {
      await stopChild(apiservers.get(node));
      apiservers.delete(node);
    },
    startPlugin,
    async reloadPlugin(node) {
      const p = plugins.get(node);
      if (p === undefined) throw new Error(`no plugin on node ${node}`);
      const FAILED = 'reload failed; the previously loaded keys stay in service';
      const [ok0, failed0] = [countLines(p.log(), 'reloaded keys'), countLines(p.log(), FAILED)];
      p.child.kill('SIGHUP');
      await waitUntil(
        `plugin ${node} reload`,
        30_000,
        async () =>
          countLines(p.log(), 'reloaded keys') + countLines(p.log(), FAILED) > ok0 + failed0,
        p.child,
      );
      return countLines(p.log(), FAILED) > failed0 ? 'failed' : 'ok';
    },
    pluginLog,
    async pluginMetrics(node) {
      const res = await fetch(`http://127.0.0.1:${nodes[node].healthPort}/metrics`);
      return res.text();
    },
    etcdctl,
    stop,
  };
}
