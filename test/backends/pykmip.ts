// A real KMIP server, PyKMIP's `pykmip-server` (scripts/setup/71-pykmip.sh), for the kmip tests and
// benchmark: TLS 1.2 with client certificates from a throw-away CA, keys in an SQLite file so they
// survive a stop/start. Certificates and keys are made, and keys provisioned, with PyKMIP's own
// client through test/backends/kmip_tool.py.

import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { findTool, freePort, startServer, type RunningServer } from './servers.js';
import type { KmipConfig } from '../../src/backends/kmip/kmip.js';
import { createKmipPool } from '../../src/backends/kmip/connection.js';
import {
  TAG,
  activateRequest,
  createAesKeyRequest,
  parseResponse,
  textField,
} from '../../src/backends/kmip/messages.js';

const run = promisify(execFile);
/** test/backends/kmip_tool.py in the source tree, wherever tsc put this compiled file. */
export const KMIP_TOOL = ((): string => {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  return join(dir, 'test', 'backends', 'kmip_tool.py');
})();

export interface PyKmip {
  readonly host: string;
  readonly port: number;
  readonly dir: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Creates and activates an AES-256 key named `name` with PyKMIP's client; returns its id. */
  createKey(name: string, who?: 'client' | 'other'): Promise<string>;
  /** The same with our own KMIP client (Create + Activate): no Python start-up, so much faster. */
  createKeyNative(name: string): Promise<string>;
  revoke(uid: string): Promise<void>;
  locate(name: string): Promise<string[]>;
  /** Runs kmip_tool.py with PyKMIP's Python. */
  tool(args: readonly string[], input?: string): Promise<string>;
  /** Connection settings for our client, as `who`. */
  config(keyName: string, who?: 'client' | 'other'): Promise<KmipConfig>;
  close(): Promise<void>;
}

function answersTcp(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

export async function createPyKmip(): Promise<PyKmip> {
  const server = findTool('pykmip-server', '71-pykmip.sh');
  const python = findTool('pykmip-python', '71-pykmip.sh');
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), 'atrest-pykmip-'));
  await mkdir(join(dir, 'policies'));
  let running: RunningServer | undefined;

  async function tool(args: readonly string[], input?: string): Promise<string> {
    const child = run(python, [KMIP_TOOL, ...args], { env: process.env });
    if (input !== undefined) {
      child.child.stdin!.end(input);
    }
    const { stdout } = await child;
    return stdout;
  }

  await tool(['certs', dir]);
  const conf = join(dir, 'server.conf');
  await writeFile(
    conf,
    [
      '[server]',
      'hostname=127.0.0.1',
      `port=${port}`,
      `certificate_path=${join(dir, 'server.pem')}`,
      `key_path=${join(dir, 'server-key.pem')}`,
      `ca_path=${join(dir, 'ca.pem')}`,
      'auth_suite=TLS1.2',
      `policy_path=${join(dir, 'policies')}`,
      'enable_tls_client_auth=True',
      'logging_level=INFO',
      `database_path=${join(dir, 'pykmip.db')}`,
      '',
    ].join('\n'),
  );

  const k: PyKmip = {
    host: '127.0.0.1',
    port,
    dir,
    async start() {
      running = await startServer(
        server,
        ['-f', conf, '-l', join(dir, 'server.log')],
        () => answersTcp(port),
        { ...process.env, PYTHONWARNINGS: 'ignore' },
        // A hard stop: the outage tests want the server gone, and PyKMIP waits for open sessions on
        // SIGTERM. Keys are committed to SQLite as they are made.
        { processGroup: true, stopSignal: 'SIGKILL' },
      );
    },
    async stop() {
      await running?.stop();
      running = undefined;
    },
    async createKey(name, who = 'client') {
      return (await tool(['create', '127.0.0.1', String(port), dir, name, who])).trim();
    },
    async createKeyNative(name) {
      const pool = createKmipPool(await k.config(name));
      try {
        const signal = AbortSignal.timeout(30_000);
        const created = parseResponse(await pool.send(createAesKeyRequest(name, 256), signal));
        const uid = created.ok ? textField(created.payload, TAG.UNIQUE_IDENTIFIER) : undefined;
        if (uid === undefined) throw new Error(`KMIP Create failed: ${JSON.stringify(created)}`);
        const activated = parseResponse(await pool.send(activateRequest(uid), signal));
        if (!activated.ok) throw new Error(`KMIP Activate failed: ${JSON.stringify(activated)}`);
        return uid;
      } finally {
        pool.close();
      }
    },
    async revoke(uid) {
      await tool(['revoke', '127.0.0.1', String(port), dir, uid]);
    },
    async locate(name) {
      return JSON.parse(await tool(['locate', '127.0.0.1', String(port), dir, name])) as string[];
    },
    tool,
    async config(keyName, who = 'client') {
      return {
        host: '127.0.0.1',
        port,
        keyName,
        cert: await readFile(join(dir, `${who}.pem`), 'utf8'),
        key: await readFile(join(dir, `${who}-key.pem`), 'utf8'),
        ca: await readFile(join(dir, 'ca.pem'), 'utf8'),
      };
    },
    async close() {
      await k.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
  await k.start();
  return k;
}
