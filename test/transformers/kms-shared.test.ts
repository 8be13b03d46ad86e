// What kms v1 and kms v2 share: how long a health result is reused, and one Decrypt for concurrent
// reads of the same uncached DEK or seed.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AtrestError } from '../../src/errors.js';
import {
  freshHealth,
  KMS_HEALTHZ_NEGATIVE_TTL_MS,
  KMS_HEALTHZ_POSITIVE_TTL_MS,
} from '../../src/transformers/kms-health.js';
import { createSingleFlight } from '../../src/transformers/single-flight.js';

test('a good health result is reused for 20 s and a failed one for 3 s, not a millisecond longer', () => {
  const ok = { ok: true, checkedAt: 1_000 };
  const failed = { ok: false, checkedAt: 1_000, error: new AtrestError('ERR_UNHEALTHY', 'down') };
  assert.equal(KMS_HEALTHZ_POSITIVE_TTL_MS, 20_000);
  assert.equal(KMS_HEALTHZ_NEGATIVE_TTL_MS, 3_000);
  assert.equal(freshHealth(ok, 1_000 + 19_999), ok);
  assert.equal(freshHealth(ok, 1_000 + 20_000), undefined);
  assert.equal(freshHealth(failed, 1_000 + 2_999), failed);
  assert.equal(freshHealth(failed, 1_000 + 3_000), undefined);
  assert.equal(freshHealth(undefined, 0), undefined);
});

test('concurrent loads of one key share one call; other keys and later loads call again', async () => {
  const once = createSingleFlight<string>();
  const calls: string[] = [];
  const releases: (() => void)[] = [];
  const load = (key: string) => () =>
    new Promise<string>((resolve) => {
      calls.push(key);
      releases.push(() => resolve(`value of ${key}`));
    });
  const a1 = once('a', load('a'));
  const a2 = once('a', load('a'));
  const b = once('b', load('b'));
  assert.equal(a1, a2, 'the second caller gets the first promise');
  assert.deepEqual(calls, ['a', 'b']);
  for (const release of releases) release();
  assert.deepEqual(await Promise.all([a1, a2, b]), ['value of a', 'value of a', 'value of b']);
  const again = once('a', load('a'));
  releases.at(-1)!();
  assert.equal(await again, 'value of a');
  assert.deepEqual(calls, ['a', 'b', 'a'], 'a settled load is not reused: caching is the caller’s');
});

test('a failed load is shared by its waiters and the next call tries again', async () => {
  const once = createSingleFlight<number>();
  let calls = 0;
  const failing = () => Promise.reject(new Error(`down ${++calls}`));
  const [x, y] = [once('k', failing), once('k', failing)];
  await assert.rejects(x, /down 1/);
  await assert.rejects(y, /down 1/);
  assert.equal(await once('k', () => Promise.resolve(7)), 7);
  assert.equal(calls, 1);
});
