// The rewrite of one chunk of keys: decrypt, encrypt with the write provider, store with conditional
// transactions, read back and check. The page loop, checkpoint and reports live in rewrite.ts.
//
// Stale values of a chunk are written together in multi-key transactions (each key's mod_revision
// compared, each value put and read back, all or nothing). When such a transaction fails because any
// key changed or vanished since it was read, nothing of it was written, and its keys are redone one by
// one with single-key transactions, exactly as a rewrite without batches does.

import { AtrestError } from '../errors.js';
import type { CompareAndPutBatchResult, CompareAndPutItem, CompareAndPutResult, KeyValue } from './client.js';
import type { ResourcePolicy } from './policy.js';
import type { RateLimiter } from './rate-limit.js';
import { classifyValue, providersTried } from './scan.js';
import type { KeyValueSource } from './source.js';
import { planBatches, txnBytesOf, type BatchLimits } from './txn-batch.js';

/** What rewrite needs from etcd (EtcdClient implements it). */
export interface RewriteStore extends KeyValueSource {
  compareAndPut(key: Uint8Array, value: Uint8Array, modRevision: number): Promise<CompareAndPutResult>;
  compareAndPutBatch(items: readonly CompareAndPutItem[]): Promise<CompareAndPutBatchResult>;
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

export type KeyOutcome =
  | { kind: 'rewritten' }
  | { kind: 'current' }
  | { kind: 'deleted' }
  | { kind: 'undecryptable'; value: UndecryptableValue }
  | { kind: 'failed'; value: FailedValue };

export interface SelectedValue {
  readonly kv: KeyValue;
  readonly policy: ResourcePolicy;
}

export interface KeyRewriterOptions {
  readonly store: RewriteStore;
  readonly limiter: RateLimiter;
  readonly limits: BatchLimits;
  /** Conflict retries per key before it is reported as failed. */
  readonly maxConflictRetries: number;
  /** Called once per compare that failed because the key changed (or vanished) since it was read. */
  readonly onConflict: () => void;
  /** Test hook: runs between reading a value and its conditional write. */
  readonly beforeWrite?: ((key: Buffer) => Promise<void>) | undefined;
  /**
   * Called with the revision of each transaction of ours whose every written key was read back and
   * verified (bytes and plaintext). etcd gives each transaction its own revision, so a key whose
   * mod_revision is still that revision holds exactly the verified bytes.
   */
  readonly onVerifiedRevision?: ((revision: number) => void) | undefined;
}

/** A stale value, decrypted and encrypted again, ready for its conditional write. */
interface Prepared {
  readonly kv: KeyValue;
  readonly policy: ResourcePolicy;
  readonly keyText: string;
  readonly context: { authenticatedData: Uint8Array };
  readonly plaintext: Buffer;
  readonly out: Buffer;
}

const messageOf = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/** A KMS or etcd failure stops the run; nothing of the key(s) named was changed by the failed call. */
async function guarded<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    const code = err instanceof AtrestError ? err.code : 'ERR_ETCD';
    throw new AtrestError(code, `${what}: ${messageOf(err)}`, { cause: err });
  }
}

/** Returns `processChunk`: the outcome of each selected value, in order. */
export function createKeyRewriter(options: KeyRewriterOptions): (chunk: readonly SelectedValue[]) => Promise<KeyOutcome[]> {
  const { store, limiter, maxConflictRetries: maxRetries } = options;

  const prepare = async (kv: KeyValue, policy: ResourcePolicy): Promise<KeyOutcome | Prepared> => {
    const keyText = kv.key.toString('utf8');
    const context = { authenticatedData: kv.key };
    let read;
    try {
      read = await policy.transformer.transformFromStorage(kv.value, context);
    } catch (err) {
      // Became undecryptable since the preflight (a concurrent writer with another config?): leave it.
      const stored = (await classifyValue(kv, policy, false)).stored;
      const value = { key: keyText, resource: policy.resource, stored, providersTried: providersTried(err, policy), reason: messageOf(err) };
      return { kind: 'undecryptable', value };
    }
    if (!read.stale) return { kind: 'current' };
    const out = await guarded(keyText, () => policy.transformer.transformToStorage(read.data, context));
    await guarded(keyText, async () => options.beforeWrite?.(kv.key));
    return { kv, policy, keyText, context, plaintext: read.data, out };
  };

  /** After a successful write: the read-back decides; a bad one is put back (conditionally) and fails. */
  const settle = async (p: Prepared, stored: KeyValue | undefined): Promise<KeyOutcome> => {
    const problem = await verify(stored, p.out, p.plaintext, p.policy, p.context);
    if (problem === undefined) return { kind: 'rewritten' };
    if (stored) await store.compareAndPut(p.kv.key, p.kv.value, stored.modRevision).catch(() => undefined);
    return { kind: 'failed', value: { key: p.keyText, resource: p.policy.resource, reason: problem } };
  };

  /** One key, one transaction at a time, re-reading after each conflict (`ready`: already prepared). */
  const processKey = async (first: KeyValue, policy: ResourcePolicy, ready?: Prepared, conflicts = 0): Promise<KeyOutcome> => {
    let kv = first;
    for (let attempt = conflicts; ; attempt++) {
      let p = ready;
      ready = undefined;
      if (p === undefined) {
        const step = await prepare(kv, policy);
        if (!('out' in step)) return step;
        p = step;
      }
      await limiter.acquire();
      const { kv: read, out } = p;
      const res = await guarded(p.keyText, () => store.compareAndPut(read.key, out, read.modRevision));
      if (res.succeeded) {
        const outcome = await settle(p, res.current);
        if (outcome.kind === 'rewritten') options.onVerifiedRevision?.(res.current!.modRevision);
        return outcome;
      }
      options.onConflict();
      if (res.current === undefined) return { kind: 'deleted' };
      if (attempt >= maxRetries) {
        return { kind: 'failed', value: { key: p.keyText, resource: policy.resource, reason: `still changing after ${maxRetries} conflict retries` } };
      }
      kv = res.current;
    }
  };

  /** Several keys in one transaction; if any changed meanwhile, each is redone on its own. */
  const writeBatch = async (batch: readonly Prepared[]): Promise<KeyOutcome[]> => {
    if (batch.length === 1) return [await processKey(batch[0]!.kv, batch[0]!.policy, batch[0])];
    for (let i = 0; i < batch.length; i++) await limiter.acquire();
    const items = batch.map((p) => ({ key: p.kv.key, value: p.out, modRevision: p.kv.modRevision }));
    const what = `transaction of ${batch.length} keys from ${batch[0]!.keyText}`;
    const res = await guarded(what, () => store.compareAndPutBatch(items));
    const outcomes: KeyOutcome[] = [];
    if (res.succeeded) {
      for (const [i, p] of batch.entries()) outcomes.push(await settle(p, res.current[i]));
      // The transaction's revision is trusted only when every key it wrote checked out (a key that
      // failed its check may not have been put back).
      const revision = res.current[0]?.modRevision;
      const allVerified = outcomes.every((o, i) => o.kind === 'rewritten' && res.current[i]?.modRevision === revision);
      if (allVerified && revision !== undefined) options.onVerifiedRevision?.(revision);
      return outcomes;
    }
    for (const [i, p] of batch.entries()) {
      const current = res.current[i];
      if (current?.modRevision === p.kv.modRevision) outcomes.push(await processKey(p.kv, p.policy, p));
      else {
        options.onConflict();
        outcomes.push(current === undefined ? { kind: 'deleted' } : await processKey(current, p.policy, undefined, 1));
      }
    }
    return outcomes;
  };

  return async (chunk) => {
    const outcomes = new Array<KeyOutcome>(chunk.length);
    const ready: { index: number; p: Prepared }[] = [];
    // One after the other: `concurrency` chunks in flight bound the KMS calls in flight too.
    for (const [index, { kv, policy }] of chunk.entries()) {
      const step = await prepare(kv, policy);
      if ('out' in step) ready.push({ index, p: step });
      else outcomes[index] = step;
    }
    for (const batch of planBatches(ready, (r) => txnBytesOf(r.p.kv.key, r.p.out), options.limits)) {
      const results = await writeBatch(batch.map((r) => r.p));
      batch.forEach((r, i) => (outcomes[r.index] = results[i]!));
    }
    return outcomes;
  };
}

/** Byte equality (memcmp; nothing secret depends on its timing here: both sides are ours). */
function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
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
  if (!sameBytes(stored.value, written)) return 'read-back returned other bytes than written';
  try {
    const again = await policy.transformer.transformFromStorage(stored.value, context);
    if (!sameBytes(again.data, plaintext)) return 'read-back decrypted to a different plaintext';
    if (again.stale) return 'read-back is still stale (write provider changed during the run?)';
  } catch (err) {
    return `read-back does not decrypt: ${messageOf(err)}`;
  }
  return undefined;
}
