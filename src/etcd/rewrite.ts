// The rewrite engine: re-encrypts every selected value that the current write provider and key did
// not write (rotate a key, switch local -> KMS, disable encryption: all the same operation).
//
// Safety rules, in order:
//   1. A preflight pass decrypts everything first; undecryptable values stop the run before any write
//      unless skipUndecryptable, and are never touched.
//   2. Each write is conditional: IF mod_revision == what we read THEN put + read back ELSE read, for
//      up to 64 keys in one etcd transaction (rewrite-keys.ts). A concurrent write (by kube-apiserver)
//      makes the compare fail; nothing of that transaction is written, its keys are re-read and decided
//      again one by one, so a newer value is never overwritten with an older plaintext.
//   3. The value read back in the same transaction must be byte-identical to what we wrote and must
//      decrypt, as current, to the same plaintext; otherwise the previous bytes are put back
//      (conditionally) and the key is reported as failed. Only then does a key count as rewritten.
//   4. After each page a checkpoint records how far each range got (resume after a crash).

import { createHash } from 'node:crypto';
import { AtrestError } from '../errors.js';
import { emptyCounts, readCheckpoint, writeCheckpoint, CHECKPOINT_VERSION, type Checkpoint, type CheckpointCounts } from './checkpoint.js';
import { keyAfter } from './client.js';
import type { PolicyResolver } from './policy.js';
import { createRateLimiter } from './rate-limit.js';
import { createKeyRewriter, type FailedValue, type KeyOutcome, type RewriteStore, type SelectedValue, type UndecryptableValue } from './rewrite-keys.js';
import { classifyValue, scan, type ScanReport } from './scan.js';
import type { KeyRange, Selection } from './selection.js';
import { forEachInPages, type WorkPage } from '../paging.js';
import { DEFAULT_BATCH_LIMITS, planBatches, txnBytesOf, type BatchLimits } from './txn-batch.js';

export type { FailedValue, RewriteStore, UndecryptableValue } from './rewrite-keys.js';

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
  /** Transactions (and KMS calls) in flight. */
  readonly concurrency?: number;
  /** Keys and estimated request bytes per etcd transaction (defaults: etcd's default limits, txn-batch.ts). */
  readonly batchLimits?: Partial<BatchLimits>;
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


/** Transactions (each up to 64 keys) and KMS calls in flight by default; 4 to 16 measured alike. */
export const DEFAULT_CONCURRENCY = 8;
const MIN_PAGE_KEYS = 256;
/** Verified transaction revisions remembered for the final scan (8 bytes-ish each); beyond, it decrypts. */
const MAX_VERIFIED_REVISIONS = 1_000_000;
const MAX_PAGE_KEYS = 1024;

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

function rangeId(r: KeyRange): string {
  return hex(r.start);
}

/** One run's settings and its state shared by the passes. */
interface Run {
  readonly options: RewriteOptions;
  readonly concurrency: number;
  readonly pageSize: number;
  readonly limits: BatchLimits;
  readonly now: () => Date;
  readonly checkpoint: Checkpoint | undefined;
  readonly resumed: boolean;
  /** Ranges not yet complete according to the checkpoint. */
  readonly pending: readonly KeyRange[];
  readonly counts: CheckpointCounts;
  readonly initialCounts: CheckpointCounts;
  readonly undecryptable: UndecryptableValue[];
  readonly failures: FailedValue[];
  /** Revisions of this run's transactions whose every key was read back and verified (bounded). */
  readonly verifiedRevisions: Set<number>;
}

type Preflight = RewriteReport['preflight'];

/** Listed values are capped; the totals are always counted. */
const MAX_LISTED = 1000;

/** Where to start: a checkpoint from an earlier run of the same rewrite, a new one, or none. */
function openCheckpoint(options: RewriteOptions, now: () => Date): { checkpoint?: Checkpoint; resumed: boolean } {
  const path = options.checkpointPath;
  if (path === undefined) return { resumed: false };
  const found = readCheckpoint(path);
  if (found === undefined) {
    if (options.dryRun === true) return { resumed: false };
    const started = now().toISOString();
    const checkpoint: Checkpoint = {
      version: CHECKPOINT_VERSION,
      configHash: options.configHash,
      etcdPrefix: options.etcdPrefix,
      selection: options.selection.label,
      ranges: options.selection.ranges.map((r) => ({ start: rangeId(r), lastKey: '', complete: false })),
      counts: emptyCounts(),
      startedAt: started,
      updatedAt: started,
    };
    return { checkpoint, resumed: false };
  }
  if (found.configHash !== options.configHash) {
    throw new AtrestError(
      'ERR_CHECKPOINT_INVALID',
      `checkpoint ${path} was written for another encryption configuration (${found.configHash}); ` +
        'finish with the same configuration, or remove the checkpoint to start over',
    );
  }
  if (found.etcdPrefix !== options.etcdPrefix || found.selection !== options.selection.label) {
    throw new AtrestError(
      'ERR_CHECKPOINT_INVALID',
      `checkpoint ${path} covers "${found.selection}" under ${found.etcdPrefix}, ` +
        `not "${options.selection.label}" under ${options.etcdPrefix}`,
    );
  }
  return { checkpoint: found, resumed: true };
}

function startRun(options: RewriteOptions): Run {
  const concurrency = Math.max(1, options.concurrency ?? DEFAULT_CONCURRENCY);
  const limits = { ...DEFAULT_BATCH_LIMITS, ...options.batchLimits };
  const now = options.now ?? (() => new Date());
  const { checkpoint, resumed } = openCheckpoint(options, now);
  const counts: CheckpointCounts = checkpoint ? { ...checkpoint.counts } : emptyCounts();
  return {
    options,
    concurrency,
    // Enough keys per page for every transaction in flight, within a bounded page.
    pageSize: options.pageSize ?? Math.min(MAX_PAGE_KEYS, Math.max(MIN_PAGE_KEYS, concurrency * limits.maxKeys)),
    limits,
    now,
    checkpoint,
    resumed,
    pending: options.selection.ranges.filter((r) => !progressOf(checkpoint, r).complete),
    counts,
    initialCounts: { ...counts },
    undecryptable: [],
    failures: [],
    verifiedRevisions: new Set(),
  };
}

function progressOf(checkpoint: Checkpoint | undefined, r: KeyRange): { lastKey: string; complete: boolean } {
  return checkpoint?.ranges.find((p) => p.start === rangeId(r)) ?? { lastKey: '', complete: false };
}

/** The selected values of each page of `range` still to do, tagged with the page's last key. */
function selectedPages(run: Run, range: KeyRange): AsyncIterable<WorkPage<SelectedValue, Buffer>> {
  const { store, policies, selection } = run.options;
  const p = progressOf(run.checkpoint, range);
  const start = p.lastKey === '' ? Buffer.from(range.start) : keyAfter(Buffer.from(p.lastKey, 'hex'));
  return {
    async *[Symbol.asyncIterator]() {
      for await (const page of store.pages(start, range.end, { pageSize: run.pageSize })) {
        const items = page.map((kv) => ({ kv, policy: policies.forKey(kv.key) })).filter((x) => selection.includes(x.policy));
        yield { items, tag: page[page.length - 1]!.key };
      }
    },
  };
}

/** 1. Decrypt everything still to do; count what needs rewriting and list what does not decrypt. */
async function preflightPass(run: Run): Promise<{ preflight: Preflight; undecryptableTotal: number }> {
  const preflight = { scanned: 0, toRewrite: 0, current: 0, undecryptable: 0 };
  run.options.onProgress?.({ phase: 'preflight', done: 0, total: run.options.total ?? 0, rewritten: 0 });
  for (const range of run.pending) {
    await forEachInPages(
      selectedPages(run, range),
      run.concurrency,
      ({ kv, policy }) => classifyValue(kv, policy, true),
      (_last, items, classes) => {
        classes.forEach((c, i) => {
          const { kv, policy } = items[i]!;
          preflight.scanned++;
          if (c.state === 'current') preflight.current++;
          else if (c.state !== 'undecryptable') preflight.toRewrite++;
          else {
            preflight.undecryptable++;
            if (run.undecryptable.length < MAX_LISTED) {
              const { stored, providersTried = [], reason = '' } = c;
              run.undecryptable.push({ key: kv.key.toString('utf8'), resource: policy.resource, stored, providersTried, reason });
            }
          }
        });
        run.options.onProgress?.({ phase: 'preflight', done: preflight.scanned, total: run.options.total ?? 0, rewritten: 0 });
      },
    );
  }
  return { preflight, undecryptableTotal: preflight.undecryptable };
}

function tally(run: Run, o: KeyOutcome): void {
  const { counts } = run;
  if (o.kind === 'rewritten') counts.rewritten++;
  else if (o.kind === 'current') counts.alreadyCurrent++;
  else if (o.kind === 'deleted') counts.deleted++;
  else if (o.kind === 'undecryptable') {
    counts.skippedUndecryptable++;
    if (!run.undecryptable.some((u) => u.key === o.value.key) && run.undecryptable.length < MAX_LISTED) {
      run.undecryptable.push(o.value);
    }
  } else {
    counts.failed++;
    if (run.failures.length < MAX_LISTED) run.failures.push(o.value);
  }
}

function saveCheckpoint(run: Run, range: KeyRange, lastKey: Buffer | undefined, complete: boolean): void {
  const { checkpoint, options } = run;
  if (!checkpoint || options.checkpointPath === undefined) return;
  const p = checkpoint.ranges.find((x) => x.start === rangeId(range));
  if (!p) return;
  if (lastKey) p.lastKey = hex(lastKey);
  p.complete = complete;
  Object.assign(checkpoint.counts, run.counts);
  checkpoint.updatedAt = run.now().toISOString();
  writeCheckpoint(options.checkpointPath, checkpoint);
}

/** 2. Rewrite page by page, `concurrency` chunks (each up to one transaction's worth) at a time. */
async function rewritePass(run: Run, total: number): Promise<void> {
  const { options, limits } = run;
  const processChunk = createKeyRewriter({
    store: options.store,
    limiter: createRateLimiter(options.rate ?? 0),
    limits,
    maxConflictRetries: options.maxConflictRetries ?? 10,
    onConflict: () => run.counts.conflicts++,
    beforeWrite: options.beforeWrite,
    onVerifiedRevision: (revision) => {
      if (run.verifiedRevisions.size < MAX_VERIFIED_REVISIONS) run.verifiedRevisions.add(revision);
    },
  });
  let done = 0;
  options.onProgress?.({ phase: 'rewrite', done, total, rewritten: run.counts.rewritten });
  for (const range of run.pending) {
    const chunked = async function* (): AsyncGenerator<WorkPage<SelectedValue[], Buffer>> {
      for await (const page of selectedPages(run, range)) {
        yield { items: planBatches(page.items, (s) => txnBytesOf(s.kv.key, s.kv.value), limits), tag: page.tag };
      }
    };
    await forEachInPages(chunked(), run.concurrency, processChunk, (lastKey, chunks, outcomes) => {
      for (const o of outcomes.flat()) tally(run, o);
      done += chunks.reduce((n, c) => n + c.length, 0);
      // Only pages fully done (with every page before them) reach here: a safe resume point.
      saveCheckpoint(run, range, lastKey, false);
      options.onProgress?.({ phase: 'rewrite', done, total, rewritten: run.counts.rewritten });
    });
    saveCheckpoint(run, range, undefined, true);
  }
}

/**
 * 3. Scan everything covered (from the start of each range, not just this run's part). A value whose
 * mod_revision is one of this run's verified transactions was last written by that transaction (etcd
 * gives every transaction its own revision), so its bytes are the ones read back and checked there:
 * it is classified from its stored bytes instead of being decrypted a second time. Everything else
 * (other writers, earlier runs, values left alone) is decrypted.
 */
async function verificationScan(run: Run, total: number): Promise<ScanReport> {
  const { options } = run;
  options.onProgress?.({ phase: 'verify', done: 0, total: options.total ?? total, rewritten: run.counts.rewritten });
  return scan({
    source: options.store,
    selection: options.selection,
    policies: options.policies,
    decrypt: true,
    concurrency: run.concurrency,
    pageSize: run.pageSize,
    verified: (kv) => run.verifiedRevisions.has(kv.modRevision),
    onProgress: (n) =>
      options.onProgress?.({ phase: 'verify', done: n, total: options.total ?? total, rewritten: run.counts.rewritten }),
  });
}

function isConverged(run: Run, finalScan: ScanReport | undefined): boolean {
  if (run.counts.failed > 0) return false;
  if (finalScan === undefined) return true;
  const skipped = new Set(run.undecryptable.map((u) => u.key));
  const t = finalScan.totals;
  return (
    t.stale === 0 &&
    t.unknown === 0 &&
    finalScan.findings.every((f) => f.problem === 'undecryptable' && skipped.has(f.key)) &&
    finalScan.findingsTotal === finalScan.findings.length
  );
}

function reportOf(run: Run, preflight: Preflight, rest: Pick<RewriteReport, 'failures' | 'converged' | 'finalScan'>): RewriteReport {
  const countsThisRun = emptyCounts();
  for (const k of Object.keys(countsThisRun) as (keyof CheckpointCounts)[]) {
    countsThisRun[k] = run.counts[k] - run.initialCounts[k];
  }
  const { finalScan, ...others } = rest;
  return {
    dryRun: run.options.dryRun === true,
    selection: run.options.selection.label,
    resumed: run.resumed,
    preflight,
    counts: run.counts,
    countsThisRun,
    undecryptable: run.undecryptable,
    ...others,
    ...(finalScan ? { finalScan } : {}),
  };
}

export async function rewrite(options: RewriteOptions): Promise<RewriteReport> {
  const run = startRun(options);
  const { preflight, undecryptableTotal } = await preflightPass(run);
  if (undecryptableTotal > 0 && !options.skipUndecryptable) {
    throw new UndecryptableValuesError(run.undecryptable, undecryptableTotal);
  }
  if (options.dryRun === true) {
    return reportOf(run, preflight, { failures: [], converged: preflight.toRewrite === 0 && undecryptableTotal === 0 });
  }
  await rewritePass(run, preflight.scanned);
  const finalScan = options.skipFinalScan ? undefined : await verificationScan(run, preflight.scanned);
  return reportOf(run, preflight, { failures: run.failures, converged: isConverged(run, finalScan), finalScan });
}
