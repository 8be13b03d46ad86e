// Test helper: `atrest serve --backend pkcs11` as a child process in front of a SoftHSM2 token of its
// own (softhsm.ts), with KMS v1beta1 and v2 clients on its UNIX socket. start() resolves once Status
// says healthy; stop() closes the clients, stops the plugin and removes the token.

import { spawn, type ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  createKmsV1Client,
  createKmsV2Client,
  type KmsV1Client,
  type KmsV2Client,
} from '../../src/kms-client/index.js';
import { waitFor } from './suite.js';
import { createSoftHsmToken, type SoftHsmToken } from './softhsm.js';

const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

export interface Pkcs11Plugin {
  readonly token: SoftHsmToken;
  readonly process: ChildProcess;
  readonly endpoint: string;
  readonly kmsV1: KmsV1Client;
  readonly kmsV2: KmsV2Client;
  /** The last 8 kB the plugin wrote to stderr (its log, or a native crash message). */
  stderr(): string;
  stop(): Promise<void>;
}

export interface Pkcs11PluginOptions {
  readonly keyLabel: string;
  /** Extra lines for the pkcs11 section of the backend configuration (indented by the caller). */
  readonly extraConfig?: readonly string[];
  readonly timeoutMs?: number;
}

export async function startPkcs11Plugin(options: Pkcs11PluginOptions): Promise<Pkcs11Plugin> {
  const token = createSoftHsmToken();
  token.generateKey(options.keyLabel);
  const config = join(token.dir, 'backends.yaml');
  await writeFile(
    config,
    [
      'pkcs11:',
      `  module: ${token.module}`,
      `  tokenLabel: ${token.tokenLabel}`,
      `  keyLabel: ${options.keyLabel}`,
      `  pinFile: ${token.pinFile}`,
      ...(options.extraConfig ?? []),
      '',
    ].join('\n'),
  );
  const socket = join(token.dir, 'kms.sock');
  const child = spawn(
    process.execPath,
    [
      CLI,
      'serve',
      '--listen',
      `unix://${socket}`,
      '--backend',
      'pkcs11',
      '--backend-config',
      config,
      '--health-listen',
      'off',
    ],
    { env: { ...process.env, SOFTHSM2_CONF: token.conf }, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-8000)));
  const endpoint = `unix://${socket}`;
  const timeoutMs = options.timeoutMs ?? 10_000;
  const kmsV1 = createKmsV1Client({ endpoint, timeoutMs });
  const kmsV2 = createKmsV2Client({ endpoint, timeoutMs });

  const plugin: Pkcs11Plugin = {
    token,
    process: child,
    endpoint,
    kmsV1,
    kmsV2,
    stderr: () => stderr,
    async stop() {
      await kmsV1.close();
      await kmsV2.close();
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      token.remove();
    },
  };
  try {
    await waitFor(
      'the plugin to report healthy',
      async () => {
        if (child.exitCode !== null || child.signalCode !== null) {
          throw new Error(`the plugin exited (${child.exitCode ?? child.signalCode})`);
        }
        return (await kmsV2.status().catch(() => undefined))?.healthz === 'ok';
      },
      30_000,
    );
  } catch (err) {
    await plugin.stop();
    throw new Error(`${String(err)}\nplugin stderr:\n${stderr}`);
  }
  return plugin;
}
