// The one retry loop (src/retry.ts): how long it waits, when it stops, and what the caller gets.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { withRetry, type RetryClock, type RetryOptions } from '../src/retry.js';

/** A clock on which each wait advances time by exactly what was asked. */
function fakeClock(random = (): number => 0.5): RetryClock & { slept: number[]; t: number } {
  const clock = {
    slept: [] as number[],
    t: 0,
    now: () => clock.t,
    sleep: async (ms: number) => {
      clock.slept.push(ms);
      clock.t += ms;
    },
    random,
  };
  return clock;
}

class Transient extends Error {}

const base: RetryOptions = {
  attempts: 6,
  baseDelayMs: 100,
  maxDelayMs: 1000,
  isRetryable: (err) => err instanceof Transient,
};

/** An operation failing transiently `failures` times, then answering its attempt number. */
function flaky(failures: number): { op: (attempt: number) => Promise<number>; calls: number[] } {
  const calls: number[] = [];
  return {
    calls,
    op: async (attempt) => {
      calls.push(attempt);
      if (calls.length <= failures) throw new Transient(`failure ${calls.length}`);
      return attempt;
    },
  };
}

describe('withRetry', () => {
  it('waits base, then doubles per attempt up to the cap, and numbers the attempts from 1', async () => {
    const clock = fakeClock();
    const { op, calls } = flaky(5);
    assert.equal(await withRetry(op, { ...base, clock }), 6);
    assert.deepEqual(calls, [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(clock.slept, [100, 200, 400, 800, 1000]);
  });

  it('with jitter, every wait lies in [0, the backoff ceiling)', async () => {
    for (const r of [0, 0.25, 0.999999]) {
      const clock = fakeClock(() => r);
      await withRetry(flaky(5).op, { ...base, jitter: true, clock });
      const ceilings = [100, 200, 400, 800, 1000];
      clock.slept.forEach((ms, i) => {
        assert.ok(ms >= 0 && ms < ceilings[i]!, `wait ${i} = ${ms} with random ${r}`);
        assert.equal(ms, Math.floor(r * ceilings[i]!));
      });
    }
    const real = fakeClock(Math.random);
    await withRetry(flaky(40).op, { ...base, attempts: 41, jitter: true, clock: real });
    assert.ok(real.slept.every((ms) => ms >= 0 && ms < 1000), real.slept.join(','));
  });

  it('passes a failure that is not retryable through at once, without waiting', async () => {
    const clock = fakeClock();
    const fatal = new Error('wrong PIN');
    let calls = 0;
    const op = async (): Promise<never> => {
      calls++;
      throw fatal;
    };
    await assert.rejects(withRetry(op, { ...base, clock }), (err) => err === fatal);
    assert.equal(calls, 1);
    assert.deepEqual(clock.slept, []);
  });

  it('reports the last error when the attempts run out', async () => {
    const clock = fakeClock();
    const { op, calls } = flaky(10);
    await assert.rejects(withRetry(op, { ...base, attempts: 3, clock }), /^Error: failure 3$/);
    assert.equal(calls.length, 3);
    assert.deepEqual(clock.slept, [100, 200]);
  });

  it('gives up with the last error when the next wait would end past the budget', async () => {
    const clock = fakeClock();
    const { op, calls } = flaky(10);
    // waits 100 (t=100), 200 (t=300), 400 (t=700); the next, 800, would end at 1500 >= 1000
    await assert.rejects(withRetry(op, { ...base, budgetMs: 1000, clock }), /failure 4/);
    assert.equal(calls.length, 4);
    assert.deepEqual(clock.slept, [100, 200, 400]);
  });

  it('in last-attempt mode, cuts the last wait to the budget and tries once more there', async () => {
    const clock = fakeClock();
    const { op, calls } = flaky(Infinity);
    const options: RetryOptions = { ...base, attempts: Infinity, budgetMs: 1000, atBudget: 'last-attempt', clock };
    await assert.rejects(withRetry(op, options), /failure 5/);
    assert.deepEqual(clock.slept, [100, 200, 400, 300]);
    assert.equal(clock.t, 1000);
    assert.equal(calls.length, 5);
  });

  it('waits what the failure asks for (Retry-After) instead of the backoff', async () => {
    const clock = fakeClock();
    const { op } = flaky(2);
    await withRetry(op, { ...base, delayHintMs: (err) => ((err as Error).message === 'failure 1' ? 7000 : undefined), clock });
    assert.deepEqual(clock.slept, [7000, 200]);
  });

  it('calls onAttempt before every attempt and onRetry before every wait', async () => {
    const clock = fakeClock();
    const attempts: number[] = [];
    const retries: string[] = [];
    await withRetry(flaky(2).op, {
      ...base,
      clock,
      onAttempt: (n) => attempts.push(n),
      onRetry: ({ attempt, error, delayMs }) => retries.push(`${attempt}:${(error as Error).message}:${delayMs}`),
    });
    assert.deepEqual(attempts, [1, 2, 3]);
    assert.deepEqual(retries, ['1:failure 1:100', '2:failure 2:200']);
  });

  it('an abort stops the wait at once and rejects with the signal reason; no attempt follows', async () => {
    const controller = new AbortController();
    const reason = new Error('caller gave up');
    const { op, calls } = flaky(Infinity);
    // Real time and an hour's backoff: only the abort can end this wait.
    const pending = withRetry(op, {
      ...base,
      baseDelayMs: 3_600_000,
      maxDelayMs: 3_600_000,
      signal: controller.signal,
      // abort once the wait has begun (its timer would keep this test alive for an hour)
      onRetry: () => setImmediate(() => controller.abort(reason)),
    });
    await assert.rejects(pending, (err) => err === reason);
    assert.equal(calls.length, 1);
  });

  it('an abort during an attempt prevents the next one, even on a clock that ignores the signal', async () => {
    const controller = new AbortController();
    const clock = fakeClock();
    let calls = 0;
    const op = async (): Promise<never> => {
      calls++;
      controller.abort(new Error('stop'));
      throw new Transient('busy');
    };
    await assert.rejects(withRetry(op, { ...base, clock, signal: controller.signal }), /stop/);
    assert.equal(calls, 1);
  });

  it('makes no attempt when the signal is already aborted', async () => {
    const controller = new AbortController();
    controller.abort(new Error('too late'));
    const { op, calls } = flaky(0);
    await assert.rejects(withRetry(op, { ...base, signal: controller.signal }), /too late/);
    assert.deepEqual(calls, []);
  });
});
