// How many conditional writes fit in one etcd transaction: grouping by count and by bytes under the
// server's default limits. Pure; the rewrite engine decides what goes into a batch.

/**
 * etcd's --max-txn-ops (default 128) bounds the longest of the compare, success and failure lists. A
 * batch of n keys has n compares, 2n success ops (put + read-back range) and n failure ops: n <= 64.
 */
export const MAX_TXN_KEYS = 64;

/**
 * etcd's --max-request-bytes defaults to 1.5 MiB for the whole request (every key three times, every
 * value once, plus framing). A batch is kept to 1 MiB of estimated request bytes so that the framing
 * and the raft envelope stay well inside the limit; a single larger value goes alone (it is as large
 * as kube-apiserver itself could store).
 */
export const MAX_TXN_BYTES = 1024 * 1024;

/** Framing per key in a batch (compare, put and range messages, mod_revision): a generous estimate. */
const PER_KEY_OVERHEAD = 64;

export interface BatchLimits {
  readonly maxKeys: number;
  readonly maxBytes: number;
}

export const DEFAULT_BATCH_LIMITS: BatchLimits = { maxKeys: MAX_TXN_KEYS, maxBytes: MAX_TXN_BYTES };

/** The request bytes one conditional write adds to a transaction: the key three times, the value once. */
export function txnBytesOf(key: Uint8Array, value: Uint8Array): number {
  return key.length * 3 + value.length + PER_KEY_OVERHEAD;
}

/**
 * Splits `items` (in order) into consecutive batches of at most `maxKeys` items and at most
 * `maxBytes` of `bytesOf` each; an item larger than `maxBytes` on its own is a batch of one.
 */
export function planBatches<T>(items: readonly T[], bytesOf: (item: T) => number, limits: BatchLimits): T[][] {
  if (!(limits.maxKeys >= 1) || !(limits.maxBytes >= 1)) throw new RangeError('batch limits must be at least 1');
  const batches: T[][] = [];
  let batch: T[] = [];
  let bytes = 0;
  for (const item of items) {
    const size = bytesOf(item);
    if (batch.length > 0 && (batch.length >= limits.maxKeys || bytes + size > limits.maxBytes)) {
      batches.push(batch);
      batch = [];
      bytes = 0;
    }
    batch.push(item);
    bytes += size;
  }
  if (batch.length > 0) batches.push(batch);
  return batches;
}
