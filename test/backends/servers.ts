// Starting and stopping the real servers the backend tests run against (moto, Vault), on
// 127.0.0.1 and a free port, as child processes the tests always kill.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { homedir } from 'node:os';
import { join, delimiter } from 'node:path';

export function cacheBin(): string {
  return (
    process.env['ATREST_CACHE_BIN'] ??
    join(process.env['XDG_CACHE_HOME'] ?? join(homedir(), '.cache'), 'atrest', 'bin')
  );
}

/** Finds a tool installed by scripts/setup (or on PATH); fails with a message naming the script. */
export function findTool(name: string, setupScript: string): string {
  const dirs = [cacheBin(), ...(process.env['PATH'] ?? '').split(delimiter)];
  for (const d of dirs) {
    const p = join(d, name);
    if (d !== '' && existsSync(p)) return p;
  }
  throw new Error(
    `${name} not found in ${cacheBin()} or on PATH; run "bash scripts/setup/${setupScript}"`,
  );
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export interface RunningServer {
  readonly process: ChildProcess;
  /** The last lines it printed (for failure messages). */
  output(): string;
  stop(): Promise<void>;
}

/** Spawns a server and polls `ready` until it answers (or the process dies, or 60 s pass). */
export async function startServer(
  command: string,
  args: readonly string[],
  ready: () => Promise<boolean>,
  env: NodeJS.ProcessEnv = process.env,
  options: { readonly processGroup?: boolean; readonly stopSignal?: NodeJS.Signals } = {},
): Promise<RunningServer> {
  // processGroup: the server forks helpers (PyKMIP's multiprocessing manager) that would outlive it
  // and hold our pipes open; it then runs in its own group, and stop() signals the whole group.
  const group = options.processGroup === true;
  const child = spawn(command, args, {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: group,
  });
  const signal = (sig: NodeJS.Signals): void => {
    try {
      if (group && child.pid !== undefined) process.kill(-child.pid, sig);
      else child.kill(sig);
    } catch {
      // already gone
    }
  };
  let out = '';
  const keep = (chunk: Buffer): void => {
    out = (out + chunk.toString('utf8')).slice(-4000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  let exited = false;
  const exit = new Promise<void>((resolve) => {
    child.once('exit', () => {
      exited = true;
      resolve();
    });
  });
  const server: RunningServer = {
    process: child,
    output: () => out,
    async stop() {
      if (!exited) {
        signal(options.stopSignal ?? 'SIGTERM');
        const timer = setTimeout(() => signal('SIGKILL'), 5000);
        await exit;
        clearTimeout(timer);
      }
      // Helpers left in the group go too.
      if (group) signal('SIGKILL');
    },
  };
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (exited) throw new Error(`${command} exited before it was ready:\n${out}`);
    try {
      if (await ready()) return server;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) {
      await server.stop();
      throw new Error(`${command} was not ready within 60 s:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 150));
  }
}

/** True when something answers HTTP at the URL (any status). */
export async function answersHttp(url: string): Promise<boolean> {
  try {
    await fetch(url, { signal: AbortSignal.timeout(1000) });
    return true;
  } catch {
    return false;
  }
}
