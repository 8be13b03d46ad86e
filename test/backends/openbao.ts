// A real OpenBao server (`bao`, installed by scripts/setup/70-openbao.sh) for the vault-transit
// tests and benchmark: a dev server (in memory, a known root token) or a file-storage server that
// is initialised, unsealed, sealed and unsealed again like a production one. Admin calls go over the
// HTTP API; rotation uses the `bao` CLI exactly as docs/backends.md tells operators to.

import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { Agent, fetch as undiciFetch } from 'undici';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { findTool, freePort, startServer, type RunningServer } from './servers.js';

const run = promisify(execFile);
export const ROOT_TOKEN = 'atrest-root';

export interface OpenBao {
  readonly address: string;
  readonly dir: string;
  /** dev-tls: the generated CA's PEM file. */
  readonly caFile: string;
  /** The root token (dev: fixed; file storage: from init). */
  readonly rootToken: () => string;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Admin call with the root token; throws on a non-2xx answer. */
  api(method: string, path: string, body?: unknown): Promise<Record<string, unknown>>;
  /** The `bao` CLI with BAO_ADDR and the root token set. */
  cli(...args: string[]): Promise<string>;
  seal(): Promise<void>;
  unseal(): Promise<void>;
  close(): Promise<void>;
}

/** dev: in memory over HTTP; dev-tls: the same over HTTPS with a generated CA; file: Raft storage. */
export async function createOpenBao(mode: 'dev' | 'dev-tls' | 'file'): Promise<OpenBao> {
  const bao = findTool('bao', '70-openbao.sh');
  const port = await freePort();
  const clusterPort = await freePort();
  const address = `${mode === 'dev-tls' ? 'https' : 'http'}://127.0.0.1:${port}`;
  const dir = await mkdtemp(join(tmpdir(), `atrest-bao-${mode}-`));
  // bao keeps a token helper file in $HOME; keep it out of the real one.
  const tlsDir = join(dir, 'tls');
  const env = {
    ...process.env,
    HOME: dir,
    BAO_ADDR: address,
    VAULT_ADDR: address,
    ...(mode === 'dev-tls' ? { BAO_CACERT: join(tlsDir, 'vault-ca.pem') } : {}),
  };
  let agent: Agent | undefined;
  const dispatcher = async (): Promise<Agent> => {
    if (agent !== undefined) return agent;
    const ca =
      mode === 'dev-tls' ? await readFile(join(tlsDir, 'vault-ca.pem'), 'utf8') : undefined;
    agent = new Agent({ connect: ca !== undefined ? { ca } : {} });
    return agent;
  };
  const fetch = async (url: string, init: Parameters<typeof undiciFetch>[1] = {}) =>
    undiciFetch(url, { ...init, dispatcher: await dispatcher() });
  let server: RunningServer | undefined;
  let root = mode === 'file' ? '' : ROOT_TOKEN;
  let unsealKey = '';

  async function api(
    method: string,
    path: string,
    body?: unknown,
    token: string = root,
  ): Promise<Record<string, unknown>> {
    const res = await fetch(`${address}/v1/${path}`, {
      method,
      headers: { 'x-vault-token': token, 'content-type': 'application/json' },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: HTTP ${res.status} ${text}`);
    return text === '' ? {} : (JSON.parse(text) as Record<string, unknown>);
  }

  const health = async (): Promise<boolean> => {
    // Any answer counts (sealed and uninitialised servers answer 503/501).
    await fetch(`${address}/v1/sys/health`, { signal: AbortSignal.timeout(1000) });
    return true;
  };

  const b: OpenBao = {
    address,
    dir,
    caFile: join(tlsDir, 'vault-ca.pem'),
    rootToken: () => root,
    async start() {
      if (mode === 'dev' || mode === 'dev-tls') {
        if (mode === 'dev-tls') await mkdir(tlsDir, { recursive: true });
        server = await startServer(
          bao,
          [
            'server',
            '-dev',
            `-dev-root-token-id=${ROOT_TOKEN}`,
            `-dev-listen-address=127.0.0.1:${port}`,
            ...(mode === 'dev-tls' ? ['-dev-tls', `-dev-tls-cert-dir=${tlsDir}`] : []),
          ],
          health,
          env,
        );
        return;
      }
      const config = join(dir, 'server.hcl');
      await mkdir(join(dir, 'data'), { recursive: true });
      await writeFile(
        config,
        [
          // OpenBao has no "file" storage: Raft is its on-disk storage.
          `storage "raft" {`,
          `  path = "${join(dir, 'data')}"`,
          `  node_id = "atrest-test"`,
          `}`,
          `listener "tcp" {`,
          `  address = "127.0.0.1:${port}"`,
          `  tls_disable = true`,
          `}`,
          `api_addr = "${address}"`,
          `cluster_addr = "http://127.0.0.1:${clusterPort}"`,
          '',
        ].join('\n'),
      );
      server = await startServer(bao, ['server', `-config=${config}`], health, env);
      if (unsealKey === '') {
        const init = await api('PUT', 'sys/init', { secret_shares: 1, secret_threshold: 1 });
        unsealKey = (init['keys_base64'] as string[])[0]!;
        root = init['root_token'] as string;
      }
      await b.unseal();
    },
    async stop() {
      await server?.stop();
      server = undefined;
    },
    api: (method, path, body) => api(method, path, body),
    async cli(...args) {
      const { stdout } = await run(bao, args, { env: { ...env, BAO_TOKEN: root } });
      return stdout;
    },
    async seal() {
      await api('PUT', 'sys/seal');
    },
    async unseal() {
      const out = await api('PUT', 'sys/unseal', { key: unsealKey });
      if (out['sealed'] !== false) throw new Error('OpenBao did not unseal');
      // Wait until the server has become active after the unseal.
      for (;;) {
        const res = await fetch(`${address}/v1/sys/health`);
        if (res.status === 200) return;
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    async close() {
      await b.stop();
      await agent?.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
  await b.start();
  return b;
}

/** Enables Transit at `mount` (if needed) and creates key `name` of `type` (if needed). */
export async function provisionTransit(
  b: OpenBao,
  name: string,
  type = 'aes256-gcm96',
  mount = 'transit',
): Promise<void> {
  const mounts = await b.api('GET', 'sys/mounts');
  const data = (mounts['data'] ?? mounts) as Record<string, unknown>;
  if (data[`${mount}/`] === undefined)
    await b.api('POST', `sys/mounts/${mount}`, { type: 'transit' });
  await b.api('POST', `${mount}/keys/${name}`, { type });
}

/** A token limited to one Transit key, the way docs/backends.md sets it up. */
export async function transitToken(
  b: OpenBao,
  name: string,
  options: { ttl?: string; renewable?: boolean; mount?: string } = {},
): Promise<string> {
  const mount = options.mount ?? 'transit';
  await b.api('PUT', `sys/policies/acl/atrest-${name}`, { policy: transitPolicy(mount, name) });
  const out = await b.api('POST', 'auth/token/create', {
    policies: [`atrest-${name}`],
    ttl: options.ttl ?? '1h',
    renewable: options.renewable ?? true,
  });
  return (out['auth'] as Record<string, string>)['client_token']!;
}

export function transitPolicy(mount: string, name: string): string {
  return [
    `path "${mount}/keys/${name}" { capabilities = ["read"] }`,
    `path "${mount}/encrypt/${name}" { capabilities = ["update"] }`,
    `path "${mount}/decrypt/${name}" { capabilities = ["update"] }`,
    '',
  ].join('\n');
}
