// Drives the Go oracle (conformance/oracle, built by scripts/setup/40-go-oracle.sh): kube-apiserver's
// own EncryptionConfiguration loader and transformers behind a JSON-lines pipe. Test helper only.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

export function oracleBinary(): string {
  const dir = process.env['ATREST_CACHE_BIN'] ?? join(process.env['XDG_CACHE_HOME'] ?? join(homedir(), '.cache'), 'atrest', 'bin');
  const bin = join(dir, 'atrest-oracle');
  if (!existsSync(bin)) {
    throw new Error(`the Go oracle is not built: ${bin} is missing; run bash scripts/setup/40-go-oracle.sh`);
  }
  return bin;
}

export interface OracleResponse {
  readonly ok: boolean;
  readonly error?: string;
  readonly data?: string;
  readonly stale?: boolean;
  readonly n?: number;
  readonly ns?: number;
}

export interface Oracle {
  /** keep=false: verdict only (KMS plugins are not contacted). keep=true: becomes the active config. */
  load(configPath: string, options?: { reload?: boolean; keep?: boolean }): Promise<OracleResponse>;
  toStorage(gr: { group: string; resource: string }, key: string, data: Uint8Array): Promise<Buffer>;
  fromStorage(
    gr: { group: string; resource: string },
    key: string,
    data: Uint8Array,
  ): Promise<{ data: Buffer; stale: boolean }>;
  bench(request: {
    group: string;
    resource: string;
    key: string;
    size: number;
    n: number;
    direction: 'toStorage' | 'fromStorage';
  }): Promise<{ n: number; ns: number }>;
  close(): Promise<void>;
}

export function startOracle(options: { kmsV1?: boolean } = {}): Oracle {
  const child: ChildProcess = spawn(oracleBinary(), [`-kms-v1=${options.kmsV1 ?? true}`], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString('utf8')).slice(-4000);
  });
  const waiting: { resolve: (r: OracleResponse) => void; reject: (e: Error) => void }[] = [];
  let exited: Error | undefined;
  child.on('exit', (code, signal) => {
    exited = new Error(`atrest-oracle exited (${code ?? signal}); stderr: ${stderr}`);
    for (const w of waiting.splice(0)) w.reject(exited);
  });
  const lines = createInterface({ input: child.stdout! });
  lines.on('line', (line) => {
    const w = waiting.shift();
    if (w === undefined) return;
    try {
      w.resolve(JSON.parse(line) as OracleResponse);
    } catch (e) {
      w.reject(e as Error);
    }
  });

  function call(request: Record<string, unknown>): Promise<OracleResponse> {
    if (exited) return Promise.reject(exited);
    return new Promise((resolve, reject) => {
      waiting.push({ resolve, reject });
      child.stdin!.write(`${JSON.stringify(request)}\n`);
    });
  }

  async function mustOk(request: Record<string, unknown>): Promise<OracleResponse> {
    const r = await call(request);
    if (!r.ok) throw new Error(`oracle ${String(request['op'])} failed: ${r.error ?? 'no error text'}`);
    return r;
  }

  return {
    load: (configPath, o = {}) => call({ op: 'load', config: configPath, reload: o.reload ?? false, keep: o.keep ?? false }),
    async toStorage(gr, key, data) {
      const r = await mustOk({ op: 'toStorage', ...gr, key, data: Buffer.from(data).toString('base64') });
      return Buffer.from(r.data ?? '', 'base64');
    },
    async fromStorage(gr, key, data) {
      const r = await mustOk({ op: 'fromStorage', ...gr, key, data: Buffer.from(data).toString('base64') });
      return { data: Buffer.from(r.data ?? '', 'base64'), stale: r.stale ?? false };
    },
    async bench(req) {
      const r = await mustOk({ op: 'bench', ...req });
      return { n: r.n ?? 0, ns: r.ns ?? 0 };
    },
    async close() {
      if (exited) return;
      const done = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.stdin!.end();
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await done;
      clearTimeout(timer);
    },
  };
}

/** One oracle process per KMSv1 feature-gate setting, started on first use and closed together. */
export function createOraclePool(): { get(kmsV1: boolean): Oracle; close(): Promise<void> } {
  const oracles = new Map<boolean, Oracle>();
  return {
    get(kmsV1) {
      let o = oracles.get(kmsV1);
      if (!o) {
        o = startOracle({ kmsV1 });
        oracles.set(kmsV1, o);
      }
      return o;
    },
    async close() {
      await Promise.all([...oracles.values()].map((o) => o.close()));
    },
  };
}
