// Load generation shared by the plugin benchmarks: Encrypt+Decrypt pairs (v1beta1, v2) and Version
// RPCs driven by N workers over one client, with latency percentiles and the server's CPU seconds.

import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import * as v1 from '../src/proto/kms-v1beta1.js';
import * as v2 from '../src/proto/kms-v2.js';
import type { GrpcClient } from '../src/grpc/client.js';

export const T = { timeoutMs: 10_000 };

export interface Row {
  readonly name: string;
  readonly concurrency: number;
  readonly rpcs: number;
  readonly rpcPerSec: number;
  readonly p50ms: number;
  readonly p99ms: number;
  readonly cpuPer10k: number | undefined;
}

function clockTicks(): number {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
}
const TICKS = clockTicks();

/** utime + stime of a process, in seconds (fields 14 and 15 of /proc/<pid>/stat). */
export async function cpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / TICKS;
}

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export type Op = () => Promise<number>;

/** Runs `op` (which returns how many RPCs it made) with `concurrency` workers for `seconds`. */
export async function driveLoad(
  op: Op,
  concurrency: number,
  pid: number | undefined,
  seconds: number,
): Promise<Omit<Row, 'name'>> {
  const warmUntil = performance.now() + 500;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < warmUntil) await op();
    }),
  );
  const latencies: number[] = [];
  let rpcs = 0;
  const cpuBefore = pid === undefined ? 0 : await cpuSeconds(pid);
  const started = performance.now();
  const until = started + seconds * 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < until) {
        const t0 = performance.now();
        const n = await op();
        const per = (performance.now() - t0) / n;
        for (let i = 0; i < n; i++) latencies.push(per);
        rpcs += n;
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  const cpu = pid === undefined ? undefined : (await cpuSeconds(pid)) - cpuBefore;
  latencies.sort((a, b) => a - b);
  return {
    concurrency,
    rpcs,
    rpcPerSec: rpcs / elapsed,
    p50ms: percentile(latencies, 50),
    p99ms: percentile(latencies, 99),
    cpuPer10k: cpu === undefined ? undefined : (cpu / rpcs) * 10_000,
  };
}

export function v1Pair(c: GrpcClient): Op {
  const dek = randomBytes(32);
  return async () => {
    const enc = v1.EncryptResponse.decode(
      await c.unary(
        v1.V1BETA1_METHODS.encrypt,
        v1.EncryptRequest.encode({ version: 'v1beta1', plain: dek }),
        T,
      ),
    );
    await c.unary(
      v1.V1BETA1_METHODS.decrypt,
      v1.DecryptRequest.encode({ version: 'v1beta1', cipher: enc.cipher }),
      T,
    );
    return 2;
  };
}

export function v2Pair(c: GrpcClient): Op {
  const seed = randomBytes(32);
  const uid = '6f1e0a4c-8d2b-4c3e-9f5a-7b6c5d4e3f2a';
  return async () => {
    const enc = v2.EncryptResponse.decode(
      await c.unary(v2.V2_METHODS.encrypt, v2.EncryptRequest.encode({ plaintext: seed, uid }), T),
    );
    await c.unary(
      v2.V2_METHODS.decrypt,
      v2.DecryptRequest.encode({
        ciphertext: enc.ciphertext,
        uid,
        key_id: enc.key_id,
        annotations: {},
      }),
      T,
    );
    return 2;
  };
}

export function versionOnly(c: GrpcClient): Op {
  const req = v1.VersionRequest.encode({ version: 'v1beta1' });
  return async () => {
    await c.unary(v1.V1BETA1_METHODS.version, req, T);
    return 1;
  };
}

