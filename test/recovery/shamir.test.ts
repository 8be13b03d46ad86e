// Shamir's secret sharing over GF(2^8): field arithmetic against FIPS-197's worked examples, share
// vectors computed by hand from them, and any-K-of-N recovery.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { combineShares, gfInv, gfMul, splitSecret } from '../../src/recovery/shamir.js';

/** A random source that hands out the given bytes in order (so shares are reproducible). */
function fixed(bytes: number[]): (n: number) => Buffer {
  let at = 0;
  return (n) => {
    const out = Buffer.from(bytes.slice(at, at + n));
    at += n;
    return out;
  };
}

describe('GF(2^8) with the AES polynomial', () => {
  it('multiplies as FIPS-197 §4.2 and §4.2.1 show', () => {
    assert.equal(gfMul(0x57, 0x83), 0xc1); // §4.2
    assert.equal(gfMul(0x57, 0x13), 0xfe); // §4.2.1
    assert.equal(gfMul(0x57, 0x02), 0xae); // xtime examples of §4.2.1
    assert.equal(gfMul(0x57, 0x04), 0x47);
    assert.equal(gfMul(0x57, 0x08), 0x8e);
    assert.equal(gfMul(0x57, 0x10), 0x07);
  });

  it('inverts: {53}^-1 = {ca} (the S-box derivation example), and a·a^-1 = 1 for every a', () => {
    assert.equal(gfInv(0x53), 0xca);
    for (let a = 1; a < 256; a++) assert.equal(gfMul(a, gfInv(a)), 1, `a=${a}`);
    assert.throws(() => gfInv(0), RangeError);
  });
});

describe('Shamir shares', () => {
  it('matches hand-computed shares: secret {53}, K=2, coefficient {57}', () => {
    // f(x) = {53} + {57}·x: f(1) = {53}^{57} = {04}; f(2) = {53}^{ae} = {fd}; f(3) = {53}^{57}^{ae} = {aa}
    const shares = splitSecret(Buffer.from([0x53]), 2, 3, fixed([0x57]));
    assert.deepEqual(
      shares.map((s) => [s.x, s.y[0]]),
      [
        [1, 0x04],
        [2, 0xfd],
        [3, 0xaa],
      ],
    );
  });

  it('matches hand-computed shares: secret {00}, K=3, coefficients {57}, {83}', () => {
    // f(x) = {57}·x + {83}·x²; f(1) = {57}^{83} = {d4}; f(2) = {ae} ^ {83}·{04}
    const twoSquared = 0x04;
    const shares = splitSecret(Buffer.from([0x00]), 3, 2 + 1, fixed([0x57, 0x83]));
    assert.equal(shares[0]!.y[0], 0xd4);
    assert.equal(shares[1]!.y[0], 0xae ^ gfMul(0x83, twoSquared));
    assert.equal(combineShares(shares)[0], 0x00);
  });

  it('recovers a 32-byte secret from every K-subset of N shares, and not from K-1', () => {
    const secret = randomBytes(32);
    const shares = splitSecret(secret, 3, 5, randomBytes);
    for (let a = 0; a < 5; a++)
      for (let b = a + 1; b < 5; b++)
        for (let c = b + 1; c < 5; c++) {
          assert.deepEqual(combineShares([shares[c]!, shares[a]!, shares[b]!]), secret);
        }
    // Two shares of a degree-2 polynomial interpolate a different line: not the secret.
    assert.notDeepEqual(combineShares([shares[0]!, shares[1]!]), secret);
  });

  it('refuses impossible parameters and duplicate shares', () => {
    assert.throws(() => splitSecret(Buffer.alloc(1), 1, 3, randomBytes), RangeError);
    assert.throws(() => splitSecret(Buffer.alloc(1), 4, 3, randomBytes), RangeError);
    assert.throws(() => splitSecret(Buffer.alloc(1), 2, 256, randomBytes), RangeError);
    const shares = splitSecret(Buffer.alloc(4), 2, 2, randomBytes);
    assert.throws(() => combineShares([shares[0]!, shares[0]!]), /twice/);
  });
});
