// Where nonces, IVs, DEKs and seeds come from. A leaf: node:crypto only.
//
// One node:crypto randomBytes call costs about 2 µs whatever its size (a crypto job, OpenSSL's DRBG
// lock), measured at up to 18 % of the plugin's busy JS time when every Encrypt drew its 12-byte nonce
// that way. So the CSPRNG is read 4 KiB at a time and handed out in slices.

import { randomBytes } from 'node:crypto';

/** A source of random bytes; injectable so tests and vectors are reproducible. */
export type RandomSource = (n: number) => Buffer;

/**
 * node:crypto's CSPRNG, read `poolSize` bytes at a time. Each byte is handed out once: copied into a
 * Buffer of its own, then zeroed in the pool, which moves on (a refill is a new pool, never a rewrite of
 * one a caller could still see).
 */
export function createPooledRandom(poolSize = 4096): RandomSource {
  let pool = Buffer.alloc(0);
  let offset = 0;
  return (n) => {
    if (n > poolSize) return randomBytes(n);
    if (offset + n > pool.length) {
      pool = randomBytes(poolSize);
      offset = 0;
    }
    const out = Buffer.from(pool.subarray(offset, offset + n));
    pool.fill(0, offset, offset + n);
    offset += n;
    return out;
  };
}

/** The process's pooled CSPRNG: the default of every layer that draws random bytes per call. */
export const defaultRandom: RandomSource = createPooledRandom();
