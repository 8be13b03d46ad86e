// Shared setup for the plugin tests: temp dirs, keyring files, an in-process plugin on a real UNIX
// socket, and the compiled CLI spawned as a real process.

import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createKeyring, writeKeyringFile } from '../../src/backends/keyring-file.js';
import { createKeyringBackend, type KeyringBackend } from '../../src/backends/keyring.js';
import { parseUnixEndpoint } from '../../src/grpc/endpoint.js';
import { createGrpcClient, type GrpcClient } from '../../src/grpc/client.js';
import { silentLogger, type Logger } from '../../src/logger.js';
import {
  createKmsService,
  type KmsService,
  type KmsServiceOptions,
} from '../../src/kms/service.js';
import { startKmsServer, type KmsServer } from '../../src/kms/server.js';

export const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

export interface Cleanup {
  after(fn: () => unknown): void;
}

export async function tempDir(t: Cleanup, prefix = 'atrest-kms-'): Promise<string> {
  // Short base: socket paths must stay under 108 bytes.
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

export async function newKeyringFile(dir: string, name = 'keyring.json'): Promise<string> {
  const path = join(dir, name);
  await writeKeyringFile(path, createKeyring({ now: new Date(), random: randomBytes }), {
    exclusive: true,
    random: randomBytes,
  });
  return path;
}

export interface InProcessPlugin {
  readonly socketPath: string;
  readonly keyringPath: string;
  readonly backend: KeyringBackend;
  readonly service: KmsService;
  readonly server: KmsServer;
  client(authority?: string): GrpcClient;
}

export async function startInProcessPlugin(
  t: Cleanup,
  options: { readonly logger?: Logger; readonly service?: Partial<KmsServiceOptions> } = {},
): Promise<InProcessPlugin> {
  const dir = await tempDir(t);
  const keyringPath = await newKeyringFile(dir);
  const backend = await createKeyringBackend({ path: keyringPath });
  const logger = options.logger ?? silentLogger;
  const service = createKmsService({ backend, version: '9.9.9-test', logger, ...options.service });
  await service.start();
  const socketPath = join(dir, 'kms.sock');
  const server = await startKmsServer({
    endpoint: parseUnixEndpoint(`unix://${socketPath}`),
    service,
    logger,
  });
  const clients: GrpcClient[] = [];
  t.after(async () => {
    for (const c of clients) await c.close();
    service.stop();
    await server.close(1000);
    await backend.close();
  });
  return {
    socketPath,
    keyringPath,
    backend,
    service,
    server,
    client(authority = 'localhost') {
      const c = createGrpcClient({ address: socketPath, authority });
      clients.push(c);
      return c;
    },
  };
}

export interface ServeProcess {
  readonly child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves with the first JSON log line whose msg is `msg` (rejects on exit or timeout). */
  waitForLog(msg: string, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** Resolves once stdout matches `pattern` (stdout and stderr arrive independently). */
  waitForStdout(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** Resolves with the exit code (or signal name). */
  exited(): Promise<number | string>;
}

/** Spawns `node dist/src/cli/main.js ARGS`; killed (SIGKILL) after the test if still running. */
export function spawnCli(t: Cleanup, args: readonly string[], cwd?: string): ServeProcess {
  const child = spawn(process.execPath, [CLI, ...args], {
    cwd: cwd ?? process.cwd(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exit = new Promise<number | string>((resolve) =>
    child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')),
  );
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const logs = (): Record<string, unknown>[] =>
    err
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => {
        try {
          return JSON.parse(l) as Record<string, unknown>;
        } catch {
          return {};
        }
      });
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    exited: () => exit,
    waitForStdout(pattern, timeoutMs = 15_000) {
      return new Promise((resolve, reject) => {
        const started = Date.now();
        const poll = (): void => {
          if (pattern.test(out)) return resolve(out);
          if (child.exitCode !== null || Date.now() - started > timeoutMs) {
            return reject(new Error(`stdout never matched ${pattern}:\n${out}\n${err}`));
          }
          setTimeout(poll, 25);
        };
        poll();
      });
    },
    waitForLog(msg, timeoutMs = 15_000) {
      return new Promise((resolve, reject) => {
        const started = Date.now();
        const poll = (): void => {
          const hit = logs().find((l) => l['msg'] === msg);
          if (hit !== undefined) return resolve(hit);
          if (child.exitCode !== null || child.signalCode !== null) {
            return reject(
              new Error(
                `atrest exited (${child.exitCode ?? child.signalCode}) before "${msg}":\n${err}`,
              ),
            );
          }
          if (Date.now() - started > timeoutMs) {
            return reject(new Error(`no "${msg}" log line within ${timeoutMs} ms:\n${err}`));
          }
          setTimeout(poll, 25);
        };
        poll();
      });
    },
  };
}

/** Runs the CLI to completion. */
export async function runCli(
  t: Cleanup,
  args: readonly string[],
  cwd?: string,
): Promise<{ code: number | string; stdout: string; stderr: string }> {
  const p = spawnCli(t, args, cwd);
  const code = await p.exited();
  return { code, stdout: p.stdout(), stderr: p.stderr() };
}

export async function httpGet(
  url: string,
): Promise<{ status: number; body: string; type: string }> {
  const res = await fetch(url);
  return {
    status: res.status,
    body: await res.text(),
    type: res.headers.get('content-type') ?? '',
  };
}
