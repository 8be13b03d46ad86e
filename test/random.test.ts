// The pooled CSPRNG (src/random.ts): every byte handed out once, sizes honoured, slices never shared.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createPooledRandom, defaultRandom } from '../src/random.js';

test('the pooled random source never hands out the same bytes twice and honours sizes', () => {
  const random = createPooledRandom(64);
  const seen = new Set<string>();
  for (let i = 0; i < 200; i++) {
    const b = random(12);
    assert.equal(b.length, 12);
    const hex = b.toString('hex');
    assert.ok(!seen.has(hex));
    seen.add(hex);
  }
  assert.equal(random(100).length, 100);
  assert.equal(random(0).length, 0);
});

test('a slice handed out stays as it was when the pool is used up and refilled', () => {
  const random = createPooledRandom(32);
  const first = random(16);
  const copy = Buffer.from(first);
  for (let i = 0; i < 10; i++) random(16);
  assert.deepEqual(first, copy);
  assert.ok(!first.equals(Buffer.alloc(16)), 'the slice was not zeroed with the pool');
});

test('the process default is a pooled source that draws fresh bytes', () => {
  const a = defaultRandom(12);
  const b = defaultRandom(12);
  assert.equal(a.length, 12);
  assert.ok(!a.equals(b));
});
