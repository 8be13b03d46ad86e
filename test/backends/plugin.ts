// Runs the real `atrest serve --backend NAME --backend-config FILE` for the end-to-end backend tests:
// the KMS socket, the health listener on a free port, clients for v1beta1 and v2, and a clean stop.

import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  createKmsV1Client,
  createKmsV2Client,
  type KmsV1Client,
  type KmsV2Client,
} from '../../src/kms-client/index.js';
import { waitFor } from './suite.js';
import { freePort } from './servers.js';

const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

export interface Plugin {
  readonly process: ChildProcess;
  readonly v1: KmsV1Client;
  readonly v2: KmsV2Client;
  stderr(): string;
  /** GET on the health listener: status and body. */
  health(path: '/livez' | '/healthz' | '/readyz'): Promise<{ status: number; body: string }>;
  stop(): Promise<void>;
}

export async function startPlugin(dir: string, backend: string, config: string): Promise<Plugin> {
  const socket = join(dir, `${backend}.sock`);
  const healthPort = await freePort();
  const child = spawn(
    process.execPath,
    [
      CLI,
      'serve',
      '--listen',
      `unix://${socket}`,
      '--backend',
      backend,
      '--backend-config',
      config,
      '--health-listen',
      `127.0.0.1:${healthPort}`,
      '--self-test-interval',
      '1',
    ],
    { env: process.env, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-8000)));
  const v1 = createKmsV1Client({ endpoint: `unix://${socket}`, timeoutMs: 10_000 });
  const v2 = createKmsV2Client({ endpoint: `unix://${socket}`, timeoutMs: 10_000 });
  const plugin: Plugin = {
    process: child,
    v1,
    v2,
    stderr: () => stderr,
    async health(path) {
      const res = await fetch(`http://127.0.0.1:${healthPort}${path}?verbose`);
      return { status: res.status, body: await res.text() };
    },
    async stop() {
      await v1.close();
      await v2.close();
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        await new Promise((r) => child.once('exit', r));
      }
    },
  };
  await waitFor(
    `the plugin to report healthy (stderr: ${stderr})`,
    async () => {
      if (child.exitCode !== null) throw new Error(`atrest serve exited:\n${stderr}`);
      return (await v2.status().catch(() => undefined))?.healthz === 'ok';
    },
    60_000,
  );
  return plugin;
}
