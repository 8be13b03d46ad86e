// The rewrite engine: re-encrypts every selected value that the current write provider and key did
// not write (rotate a key, switch local -> KMS, disable encryption: all the same operation).
//
// Safety rules, in order:
//   1. A preflight pass decrypts everything first; undecryptable values stop the run before any write
//      unless skipUndecryptable, and are never touched.
//   2. Each write is one etcd transaction: IF mod_revision == what we read THEN put + read back ELSE
//      read. A concurrent write (by kube-apiserver) makes the compare fail; we re-read and decide again,
//      so a newer value is never overwritten with an older plaintext.
//   3. The value read back in the same transaction must be byte-identical to what we wrote and must
//      decrypt, as current, to the same plaintext; otherwise the previous bytes are put back
//      (conditionally) and the key is reported as failed. Only then does a key count as rewritten.
//   4. After each page a checkpoint records how far each range got (resume after a crash).

import { createHash } from 'node:crypto';
import { AtrestError } from '../errors.js';
import { bytesEqual } from '../bytes.js';
import { emptyCounts, readCheckpoint, writeCheckpoint, CHECKPOINT_VERSION, type Checkpoint, type CheckpointCounts } from './checkpoint.js';
import { keyAfter, type CompareAndPutResult, type KeyValue } from './client.js';
import type { PolicyResolver, ResourcePolicy } from './policy.js';
import { createRateLimiter } from './rate-limit.js';
import { classifyValue, scan, providersTried, type ScanReport } from './scan.js';
import type { KeyRange, Selection } from './selection.js';
import { forEachInPages, type KeyValueSource, type WorkPage } from './source.js';

/** What rewrite needs from etcd (EtcdClient implements it). */
export interface RewriteStore extends KeyValueSource {
  compareAndPut(key: Uint8Array, value: Uint8Array, modRevision: number): Promise<CompareAndPutResult>;
}

export interface UndecryptableValue {
  readonly key: string;
  readonly resource: string;
  readonly stored: string;
  readonly providersTried: readonly string[];
  readonly reason: string;
}

export interface FailedValue {
  readonly key: string;
  readonly resource: string;
  readonly reason: string;
}

export interface RewriteProgress {
  readonly phase: 'preflight' | 'rewrite' | 'verify';
  readonly done: number;
  readonly total: number;
  readonly rewritten: number;
}

export interface RewriteOptions {
  readonly store: RewriteStore;
  readonly selection: Selection;
  readonly policies: PolicyResolver;
  /** sha256:<hex> of the encryption configuration (bound into the checkpoint). */
  readonly configHash: string;
  readonly etcdPrefix: string;
  readonly dryRun?: boolean;
  readonly concurrency?: number;
  /** Writes per second; 0 = unlimited. */
  readonly rate?: number;
  readonly checkpointPath?: string;
  readonly skipUndecryptable?: boolean;
  readonly pageSize?: number;
  /** Conflict retries per key before it is reported as failed. */
  readonly maxConflictRetries?: number;
  readonly onProgress?: (p: RewriteProgress) => void;
  /** Keys in the selection's ranges (etcd count), shown as the preflight's and verification's total. */
  readonly total?: number;
  /** Skip the verification scan at the end (benchmarks measure it separately). */
  readonly skipFinalScan?: boolean;
  /** Test hook: runs between reading a value and its conditional write (to inject a concurrent writer). */
  readonly beforeWrite?: (key: Buffer) => Promise<void>;
  readonly now?: () => Date;
}

export interface RewriteReport {
  readonly dryRun: boolean;
  readonly selection: string;
  readonly resumed: boolean;
  readonly preflight: { scanned: number; toRewrite: number; current: number; undecryptable: number };
  /** Since the first run of a resumed rewrite (the checkpoint's totals plus this run). */
  readonly counts: CheckpointCounts;
  /** This run only (equal to counts unless resumed). */
  readonly countsThisRun: CheckpointCounts;
  /** Undecryptable values seen (listed when skipped, or the reason the run was refused). */
  readonly undecryptable: UndecryptableValue[];
  readonly failures: FailedValue[];
  /** The scan (with decryption) of everything covered, after the rewrite; absent for dry runs. */
  readonly finalScan?: ScanReport;
  /** Every covered value is now written by the current provider and key (skipped ones excepted). */
  readonly converged: boolean;
}

/** The run stopped before writing because undecryptable values exist; carries the list. */
export class UndecryptableValuesError extends AtrestError {
  readonly values: readonly UndecryptableValue[];
  readonly total: number;

  constructor(values: readonly UndecryptableValue[], total: number) {
    const shown = values
      .slice(0, 20)
      .map((v) => `  ${v.key} (${v.stored}; tried ${v.providersTried.join(', ') || 'no provider'}): ${v.reason}`)
      .join('\n');
    super(
      'ERR_DECRYPTION_FAILED',
      `refusing to rewrite: ${total} value(s) cannot be decrypted with this configuration ` +
        `(nothing was written; rerun with --skip-undecryptable to rewrite the rest and leave them untouched):\n${shown}` +
        (total > 20 ? `\n  ... and ${total - 20} more` : ''),
    );
    this.values = values;
    this.total = total;
  }
}

export function hashConfig(bytes: Uint8Array): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

function rangeId(r: KeyRange): string {
  return hex(r.start);
}

type KeyOutcome =
  | { kind: 'rewritten' }
  | { kind: 'current' }
  | { kind: 'deleted' }
  | { kind: 'undecryptable'; value: UndecryptableValue }
  | { kind: 'failed'; value: FailedValue };

export async function rewrite(options: RewriteOptions): Promise<RewriteReport> {
  const { store, selection, policies } = options;
  const concurrency = Math.max(1, options.concurrency ?? 8);
  const pageSize = options.pageSize ?? Math.max(200, concurrency * 16);
  const maxRetries = options.maxConflictRetries ?? 10;
  const now = options.now ?? (() => new Date());
  const limiter = createRateLimiter(options.rate ?? 0);
  const dryRun = options.dryRun === true;

  // Where to start: a checkpoint from an earlier run of the same rewrite, or the beginning.
  let checkpoint: Checkpoint | undefined =
    options.checkpointPath !== undefined ? readCheckpoint(options.checkpointPath) : undefined;
  const resumed = checkpoint !== undefined;
  if (checkpoint) {
    if (checkpoint.configHash !== options.configHash) {
      throw new AtrestError(
        'ERR_CHECKPOINT_INVALID',
        `checkpoint ${options.checkpointPath} was written for another encryption configuration (${checkpoint.configHash}); ` +
          'finish with the same configuration, or remove the checkpoint to start over',
      );
    }
    if (checkpoint.etcdPrefix !== options.etcdPrefix || checkpoint.selection !== selection.label) {
      throw new AtrestError(
        'ERR_CHECKPOINT_INVALID',
        `checkpoint ${options.checkpointPath} covers "${checkpoint.selection}" under ${checkpoint.etcdPrefix}, ` +
          `not "${selection.label}" under ${options.etcdPrefix}`,
      );
    }
  } else if (options.checkpointPath !== undefined && !dryRun) {
    const started = now().toISOString();
    checkpoint = {
      version: CHECKPOINT_VERSION,
      configHash: options.configHash,
      etcdPrefix: options.etcdPrefix,
      selection: selection.label,
      ranges: selection.ranges.map((r) => ({ start: rangeId(r), lastKey: '', complete: false })),
      counts: emptyCounts(),
      startedAt: started,
      updatedAt: started,
    };
  }
  const counts: CheckpointCounts = checkpoint ? { ...checkpoint.counts } : emptyCounts();
  const initialCounts: CheckpointCounts = { ...counts };
  const thisRun = (): CheckpointCounts => {
    const out = emptyCounts();
    for (const k of Object.keys(out) as (keyof CheckpointCounts)[]) out[k] = counts[k] - initialCounts[k];
    return out;
  };
  const progressOf = (r: KeyRange): { lastKey: string; complete: boolean } =>
    checkpoint?.ranges.find((p) => p.start === rangeId(r)) ?? { lastKey: '', complete: false };
  const startOf = (r: KeyRange): Buffer => {
    const p = progressOf(r);
    return p.lastKey === '' ? Buffer.from(r.start) : keyAfter(Buffer.from(p.lastKey, 'hex'));
  };
  const pending = selection.ranges.filter((r) => !progressOf(r).complete);

  // 1. Preflight: decrypt everything still to do; count what needs rewriting.
  const undecryptable: UndecryptableValue[] = [];
  let undecryptableTotal = 0;
  const preflight = { scanned: 0, toRewrite: 0, current: 0, undecryptable: 0 };
  type Selected = { kv: KeyValue; policy: ResourcePolicy };
  const selectedOf = (page: KeyValue[]): Selected[] =>
    page
      .map((kv) => ({ kv, policy: policies.forKey(kv.key) }))
      .filter((x) => selection.includes(x.policy));
  const workPages = (range: KeyRange): AsyncIterable<WorkPage<Selected, Buffer>> => ({
    async *[Symbol.asyncIterator]() {
      for await (const page of store.pages(startOf(range), range.end, { pageSize })) {
        yield { items: selectedOf(page), tag: page[page.length - 1]!.key };
      }
    },
  });
  for (const range of pending) {
    await forEachInPages(
      workPages(range),
      concurrency,
      ({ kv, policy }) => classifyValue(kv, policy, true),
      (_last, items, classes) => {
        classes.forEach((c, i) => {
          const { kv, policy } = items[i]!;
          preflight.scanned++;
          if (c.state === 'undecryptable') {
            preflight.undecryptable++;
            undecryptableTotal++;
            if (undecryptable.length < 1000) {
              undecryptable.push({
                key: kv.key.toString('utf8'),
                resource: policy.resource,
                stored: c.stored,
                providersTried: c.providersTried ?? [],
                reason: c.reason ?? '',
              });
            }
          } else if (c.state === 'current') preflight.current++;
          else preflight.toRewrite++;
        });
        options.onProgress?.({ phase: 'preflight', done: preflight.scanned, total: options.total ?? 0, rewritten: 0 });
      },
    );
  }
  if (undecryptableTotal > 0 && !options.skipUndecryptable) {
    throw new UndecryptableValuesError(undecryptable, undecryptableTotal);
  }
  if (dryRun) {
    return {
      dryRun,
      selection: selection.label,
      resumed,
      preflight,
      counts,
      countsThisRun: thisRun(),
      undecryptable,
      failures: [],
      converged: preflight.toRewrite === 0 && undecryptableTotal === 0,
    };
  }

  // 2. Rewrite, page by page, `concurrency` keys at a time.
  const failures: FailedValue[] = [];
  const total = preflight.scanned;
  let done = 0;

  const processKey = async (first: KeyValue, policy: ResourcePolicy): Promise<KeyOutcome> => {
    let kv = first;
    const keyText = kv.key.toString('utf8');
    const context = { authenticatedData: kv.key };
    for (let attempt = 0; ; attempt++) {
      let read;
      try {
        read = await policy.transformer.transformFromStorage(kv.value, context);
      } catch (err) {
        // Became undecryptable since the preflight (a concurrent writer with another config?): leave it.
        return {
          kind: 'undecryptable',
          value: {
            key: keyText,
            resource: policy.resource,
            stored: (await classifyValue(kv, policy, false)).stored,
            providersTried: providersTried(err, policy),
            reason: err instanceof Error ? err.message : String(err),
          },
        };
      }
      if (!read.stale) return { kind: 'current' };
      let out: Buffer;
      let res: CompareAndPutResult;
      try {
        out = await policy.transformer.transformToStorage(read.data, context);
        await options.beforeWrite?.(kv.key);
        await limiter.acquire();
        res = await store.compareAndPut(kv.key, out, kv.modRevision);
      } catch (err) {
        // The run stops here (KMS or etcd unavailable); nothing of this key was changed.
        const code = err instanceof AtrestError ? err.code : 'ERR_ETCD';
        throw new AtrestError(code, `${keyText}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      }
      if (!res.succeeded) {
        counts.conflicts++;
        if (res.current === undefined) return { kind: 'deleted' };
        if (attempt >= maxRetries) {
          return {
            kind: 'failed',
            value: { key: keyText, resource: policy.resource, reason: `still changing after ${maxRetries} conflict retries` },
          };
        }
        kv = res.current;
        continue;
      }
      const problem = await verify(res.current, out, read.data, policy, context);
      if (problem === undefined) return { kind: 'rewritten' };
      // Put the previous bytes back, unless someone wrote again in the meantime.
      if (res.current) await store.compareAndPut(kv.key, kv.value, res.current.modRevision).catch(() => undefined);
      return { kind: 'failed', value: { key: keyText, resource: policy.resource, reason: problem } };
    }
  };

  const saveCheckpoint = (range: KeyRange, lastKey: Buffer | undefined, complete: boolean): void => {
    if (!checkpoint || options.checkpointPath === undefined) return;
    const p = checkpoint.ranges.find((x) => x.start === rangeId(range));
    if (!p) return;
    if (lastKey) p.lastKey = hex(lastKey);
    p.complete = complete;
    Object.assign(checkpoint.counts, counts);
    checkpoint.updatedAt = now().toISOString();
    writeCheckpoint(options.checkpointPath, checkpoint);
  };

  for (const range of pending) {
    await forEachInPages(
      workPages(range),
      concurrency,
      ({ kv, policy }) => processKey(kv, policy),
      (lastKey, items, outcomes) => {
        for (const o of outcomes) {
          switch (o.kind) {
            case 'rewritten':
              counts.rewritten++;
              break;
            case 'current':
              counts.alreadyCurrent++;
              break;
            case 'deleted':
              counts.deleted++;
              break;
            case 'undecryptable':
              counts.skippedUndecryptable++;
              if (!undecryptable.some((u) => u.key === o.value.key) && undecryptable.length < 1000) {
                undecryptable.push(o.value);
              }
              break;
            case 'failed':
              counts.failed++;
              if (failures.length < 1000) failures.push(o.value);
              break;
          }
        }
        done += items.length;
        // Only pages fully done (with every page before them) reach here: a safe resume point.
        saveCheckpoint(range, lastKey, false);
        options.onProgress?.({ phase: 'rewrite', done, total, rewritten: counts.rewritten });
      },
    );
    saveCheckpoint(range, undefined, true);
  }

  // 3. Scan everything covered (from the start of each range, not just this run's part).
  let finalScan: ScanReport | undefined;
  if (!options.skipFinalScan) {
    finalScan = await scan({
      source: store,
      selection,
      policies,
      decrypt: true,
      concurrency,
      pageSize,
      onProgress: (n) => options.onProgress?.({ phase: 'verify', done: n, total: options.total ?? total, rewritten: counts.rewritten }),
    });
  }
  const skipped = new Set(undecryptable.map((u) => u.key));
  const converged =
    counts.failed === 0 &&
    (finalScan === undefined ||
      (finalScan.totals.stale === 0 &&
        finalScan.totals.unknown === 0 &&
        finalScan.findings.every((f) => f.problem === 'undecryptable' && skipped.has(f.key)) &&
        finalScan.findingsTotal === finalScan.findings.length));
  return {
    dryRun,
    selection: selection.label,
    resumed,
    preflight,
    counts,
    countsThisRun: thisRun(),
    undecryptable,
    failures,
    ...(finalScan ? { finalScan } : {}),
    converged,
  };
}

/** The read-back check: stored bytes are ours, and they decrypt, as current, to the same plaintext. */
async function verify(
  stored: KeyValue | undefined,
  written: Buffer,
  plaintext: Buffer,
  policy: ResourcePolicy,
  context: { authenticatedData: Uint8Array },
): Promise<string | undefined> {
  if (stored === undefined) return 'read-back found no value';
  if (!bytesEqual(stored.value, written)) return 'read-back returned other bytes than written';
  try {
    const again = await policy.transformer.transformFromStorage(stored.value, context);
    if (!bytesEqual(again.data, plaintext)) return 'read-back decrypted to a different plaintext';
    if (again.stale) return 'read-back is still stale (write provider changed during the run?)';
  } catch (err) {
    return `read-back does not decrypt: ${err instanceof Error ? err.message : String(err)}`;
  }
  return undefined;
}
