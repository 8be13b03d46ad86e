// The shared paging pool (src/paging.ts) as `rewrite --via-api` uses it: completion reported item by
// item in list order across pages, and a signal that stops new work while in-flight items finish.
// (Its page-grain contract is also covered in test/etcd/units.test.ts, where the etcd rewrite uses it.)

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { forEachInPages, type WorkPage } from '../src/paging.js';

/** Pages of consecutive numbers: [0..size), [size..2 size), ... */
async function* numberPages(count: number, size: number): AsyncGenerator<WorkPage<number, number>> {
  for (let p = 0; p < count; p++) yield { items: Array.from({ length: size }, (_, i) => p * size + i), tag: p };
}

/** Resolvers for each item's work, so the test decides the order in which items finish. */
function gate(): { wait(n: number): Promise<void>; release(n: number): void; started: Set<number>; onStart?: () => void } {
  const waiting = new Map<number, () => void>();
  const g = {
    started: new Set<number>(),
    onStart: undefined as (() => void) | undefined,
    wait: (n: number) =>
      new Promise<void>((resolve) => {
        waiting.set(n, resolve);
        g.started.add(n);
        g.onStart?.();
      }),
    release: (n: number) => waiting.get(n)!(),
  };
  return g;
}

/** Resolves once `cond` holds, re-checked whenever an item starts. */
function until(g: ReturnType<typeof gate>, cond: () => boolean): Promise<void> {
  return new Promise((resolve) => {
    const check = (): void => {
      if (cond()) resolve();
    };
    g.onStart = check;
    check();
  });
}

describe('forEachInPages', () => {
  it('reports items done strictly in list order, across page boundaries, before their page', async () => {
    const g = gate();
    const events: string[] = [];
    const run = forEachInPages(
      numberPages(2, 3),
      4,
      async (n) => {
        await g.wait(n);
        return n * 10;
      },
      (tag) => events.push(`page ${tag}`),
      { onItemDone: (n, r) => events.push(`${n}=${r}`) },
    );
    // four in flight: 0, 1, 2 and 3 (the next page's first item: no wait at the page boundary)
    await until(g, () => g.started.size === 4);
    assert.deepEqual([...g.started].sort(), [0, 1, 2, 3]);
    g.release(3);
    g.release(1);
    await until(g, () => g.started.size === 6);
    assert.deepEqual(events, [], 'nothing is done in order while item 0 runs');
    g.release(0);
    g.release(2);
    g.release(5);
    g.release(4);
    await run;
    assert.deepEqual(events, ['0=0', '1=10', '2=20', 'page 0', '3=30', '4=40', '5=50', 'page 1']);
  });

  it('stops starting items once the signal aborts, lets in-flight ones finish, and says it stopped', async () => {
    const g = gate();
    const controller = new AbortController();
    const finished: number[] = [];
    const done: number[] = [];
    const run = forEachInPages(
      numberPages(3, 4),
      2,
      async (n) => {
        await g.wait(n);
        finished.push(n);
      },
      () => {},
      { signal: controller.signal, onItemDone: (n) => done.push(n) },
    );
    await until(g, () => g.started.size === 2);
    controller.abort();
    g.release(1);
    g.release(0);
    assert.equal(await run, false);
    assert.deepEqual(finished.sort(), [0, 1]);
    assert.deepEqual(done, [0, 1]);
    assert.deepEqual([...g.started].sort(), [0, 1], 'no item started after the abort');
  });

  it('resolves true when every item of every page was done', async () => {
    let sum = 0;
    const all = await forEachInPages(numberPages(3, 5), 3, async (n) => void (sum += n), () => {});
    assert.equal(all, true);
    assert.equal(sum, (15 * 14) / 2);
  });
});
