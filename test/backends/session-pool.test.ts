// The session pool on its own (no Cryptoki): exclusivity, the bound, waiters that always wake up —
// with a session or with an error — and close() while calls are in flight. Every step is driven by
// promises the test resolves itself, so nothing depends on timing.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createSessionPool, type SessionPoolOptions } from '../../src/backends/session-pool.js';

interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(v: T): void;
  reject(e: unknown): void;
}

function deferred<T = void>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Lets every pending promise reaction run (the pool hands sessions over in microtasks). */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await Promise.resolve();
}

class Broken extends Error {}
const isBroken = (err: unknown): boolean => err instanceof Broken;

/** A fake key manager: sessions are numbers; each open can be made to fail or to wait. */
function fakeManager(size: number, overrides: Partial<SessionPoolOptions<number>> = {}) {
  let next = 1;
  const opened: number[] = [];
  const closed: number[] = [];
  const options: SessionPoolOptions<number> = {
    size,
    open: async () => {
      const s = next++;
      opened.push(s);
      return s;
    },
    close: (s) => void closed.push(s),
    closedError: () => new Error('closed'),
    abortedError: (reason) => new Error(`aborted: ${String(reason)}`),
    ...overrides,
  };
  return { pool: createSessionPool(options), opened, closed };
}

// A hang would show up as this timeout, with the test's name, rather than a stuck suite.
const GUARD = { timeout: 20_000 };

describe('session pool', () => {
  it('gives each call a session no other call holds, and opens at most `size`', GUARD, async () => {
    const { pool, opened } = fakeManager(3);
    const holders = new Map<number, number>();
    let maxInUse = 0;
    const gates = Array.from({ length: 50 }, () => deferred());
    const calls = gates.map((gate, i) =>
      pool.use(async (s) => {
        assert.equal(holders.get(s), undefined, `session ${s} is already held`);
        holders.set(s, i);
        maxInUse = Math.max(maxInUse, holders.size);
        await gate.promise;
        holders.delete(s);
        return s;
      }, isBroken),
    );
    // Release the calls in a scrambled order, one at a time.
    for (let k = 0; k < gates.length; k++) {
      await settle();
      gates[(k * 7) % gates.length]!.resolve();
    }
    const used = await Promise.all(calls);
    assert.equal(opened.length, 3);
    assert.equal(maxInUse, 3);
    assert.deepEqual([...new Set(used)].sort(), [1, 2, 3]);
    assert.deepEqual(pool.stats(), { open: 3, idle: 3, waiting: 0 });
  });

  it('hands a waiter the error when re-opening after a broken session fails and nothing else is in flight', GUARD, async () => {
    let failOpen = false;
    const { pool, closed } = fakeManager(1, {
      open: async () => {
        if (failOpen) throw new Error('token removed');
        return 1;
      },
      close: (s) => void closed.push(s),
    });
    const gate = deferred();
    const first = pool.use(async () => {
      await gate.promise;
      throw new Broken('session handle invalid');
    }, isBroken);
    await settle();
    const waiting = pool.use(async (s) => s, isBroken);
    await settle();
    assert.equal(pool.stats().waiting, 1);
    failOpen = true;
    gate.resolve();
    await assert.rejects(first, Broken);
    await assert.rejects(waiting, /token removed/);
    assert.deepEqual(closed, [1]);
    assert.deepEqual(pool.stats(), { open: 0, idle: 0, waiting: 0 });
    // The next call tries again, and gets a session once the key manager is back.
    failOpen = false;
    assert.equal(await pool.use(async (s) => s, isBroken), 1);
  });

  it('wakes every waiter, one after another, when opens keep failing', GUARD, async () => {
    const opens: Deferred<number>[] = [];
    const { pool } = fakeManager(2, {
      open: () => {
        const d = deferred<number>();
        opens.push(d);
        return d.promise;
      },
    });
    const calls = Array.from({ length: 6 }, () => pool.use(async (s) => s, isBroken));
    const outcomes = calls.map((c) => c.then(String, (e: Error) => e.message));
    await settle();
    assert.equal(opens.length, 2);
    assert.equal(pool.stats().waiting, 4);
    // Each failed open hands its place to the next waiter, which opens for itself.
    for (let i = 0; i < 5; i++) {
      opens[i]!.reject(new Error(`open ${i} failed`));
      await settle();
    }
    opens[5]!.resolve(42);
    assert.deepEqual(await Promise.all(outcomes), [
      'open 0 failed',
      'open 1 failed',
      'open 2 failed',
      'open 3 failed',
      'open 4 failed',
      '42',
    ]);
  });

  it('gives a released session to the first waiter, and a broken one is replaced', GUARD, async () => {
    const { pool, opened, closed } = fakeManager(1);
    const gate = deferred();
    const order: string[] = [];
    const a = pool.use(async (s) => {
      await gate.promise;
      order.push(`a:${s}`);
      throw new Broken('gone');
    }, isBroken);
    await settle();
    const b = pool.use(async (s) => void order.push(`b:${s}`), isBroken);
    const c = pool.use(async (s) => void order.push(`c:${s}`), isBroken);
    gate.resolve();
    await assert.rejects(a, Broken);
    await Promise.all([b, c]);
    assert.deepEqual(order, ['a:1', 'b:2', 'c:2']);
    assert.deepEqual(opened, [1, 2]);
    assert.deepEqual(closed, [1]);
  });

  it('removes a waiter whose signal aborts, and still serves the others', GUARD, async () => {
    const { pool } = fakeManager(1);
    const gate = deferred();
    const holder = pool.use(async (s) => {
      await gate.promise;
      return s;
    }, isBroken);
    await settle();
    const ac = new AbortController();
    const aborted = pool.use(async () => assert.fail('must not run'), isBroken, ac.signal);
    const next = pool.use(async (s) => s, isBroken);
    await settle();
    assert.equal(pool.stats().waiting, 2);
    ac.abort('deadline');
    await assert.rejects(aborted, /aborted: deadline/);
    assert.equal(pool.stats().waiting, 1);
    gate.resolve();
    assert.equal(await holder, 1);
    assert.equal(await next, 1);
    // A signal that is already aborted never gets a session.
    await assert.rejects(
      pool.use(async () => assert.fail('must not run'), isBroken, AbortSignal.abort('late')),
      /aborted: late/,
    );
  });

  it('close() fails waiting and new calls, waits for the calls in flight, then closes every session', GUARD, async () => {
    const { pool, opened, closed } = fakeManager(2);
    const gates = [deferred(), deferred()];
    const events: string[] = [];
    const inFlight = gates.map((gate, i) =>
      pool.use(async (s) => {
        await gate.promise;
        events.push(`call ${i} done`);
        return s;
      }, isBroken),
    );
    await settle();
    const waiting = pool.use(async () => assert.fail('must not run'), isBroken);
    const closing = pool.close().then(() => events.push('closed'));
    await assert.rejects(waiting, /closed/);
    await assert.rejects(pool.use(async () => 0, isBroken), /closed/);
    await settle();
    assert.deepEqual(events, [], 'close() waits for the calls in flight');
    assert.deepEqual(closed, []);
    gates[1]!.resolve();
    gates[0]!.resolve();
    assert.deepEqual(await Promise.all(inFlight), [1, 2]);
    await closing;
    assert.deepEqual(events, ['call 1 done', 'call 0 done', 'closed']);
    assert.deepEqual(closed.sort(), opened.sort());
    assert.deepEqual(pool.stats(), { open: 0, idle: 0, waiting: 0 });
  });

  it('close() while a session is being opened closes that session when it arrives', GUARD, async () => {
    const open = deferred<number>();
    const { pool, closed } = fakeManager(1, { open: () => open.promise });
    const call = pool.use(async () => assert.fail('must not run'), isBroken);
    await settle();
    let done = false;
    const closing = pool.close().then(() => (done = true));
    await settle();
    assert.equal(done, false);
    open.resolve(7);
    await assert.rejects(call, /closed/);
    await closing;
    assert.deepEqual(closed, [7]);
  });
});
