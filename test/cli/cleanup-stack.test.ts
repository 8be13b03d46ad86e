// The start-up rollback of `atrest serve`: undo steps run newest first, all of them, failures
// reported.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createCleanupStack } from '../../src/cli/cleanup-stack.js';

/** Runs steps 1..n in order, each pushing its undo; step k throws. Returns what ran, in order. */
async function runUntilFailure(n: number, failAt: number, failingUndos: readonly number[] = []) {
  const stack = createCleanupStack();
  const log: string[] = [];
  let thrown: unknown;
  try {
    for (let i = 1; i <= n; i++) {
      log.push(`do ${i}`);
      if (i === failAt) throw new Error(`step ${i} failed`);
      stack.push(`step ${i}`, async () => {
        log.push(`undo ${i}`);
        if (failingUndos.includes(i)) throw new Error(`undo ${i} failed`);
      });
    }
  } catch (err) {
    thrown = err;
  }
  const failures = await stack.unwind();
  return { log, failures, thrown };
}

test('a failure at step k undoes steps k-1..1 in reverse order, and nothing else', async () => {
  for (let k = 1; k <= 4; k++) {
    const r = await runUntilFailure(4, k);
    const undone = Array.from({ length: k - 1 }, (_, i) => `undo ${k - 1 - i}`);
    const done = Array.from({ length: k }, (_, i) => `do ${i + 1}`);
    assert.deepEqual(r.log, [...done, ...undone], `failure at step ${k}`);
    assert.deepEqual(r.failures, []);
    assert.match(String(r.thrown), new RegExp(`step ${k} failed`));
  }
});

test('a failing undo does not stop the others, and every failure is reported with its step', async () => {
  const r = await runUntilFailure(5, 5, [3, 1]);
  assert.deepEqual(r.log.slice(5), ['undo 4', 'undo 3', 'undo 2', 'undo 1']);
  assert.deepEqual(
    r.failures.map((f) => [f.name, (f.error as Error).message]),
    [
      ['step 3', 'undo 3 failed'],
      ['step 1', 'undo 1 failed'],
    ],
  );
});

test('a synchronous undo that throws is reported like an asynchronous one', async () => {
  const stack = createCleanupStack();
  const ran: string[] = [];
  stack.push('first', () => void ran.push('first'));
  stack.push('second', () => {
    throw new TypeError('sync failure');
  });
  const failures = await stack.unwind();
  assert.deepEqual(ran, ['first']);
  assert.equal(failures.length, 1);
  assert.equal(failures[0]!.name, 'second');
  assert.ok(failures[0]!.error instanceof TypeError);
});

test('unwind empties the stack: a second unwind runs nothing', async () => {
  const stack = createCleanupStack();
  let runs = 0;
  stack.push('once', () => void runs++);
  await stack.unwind();
  assert.deepEqual(await stack.unwind(), []);
  assert.equal(runs, 1);
});
