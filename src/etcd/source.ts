// Where key-values come from: a live etcd (paged ranges) or a snapshot file already read into
// memory. Scan and decrypt work over either; rewrite needs the live client.

import type { KeyValue } from './client.js';

export interface KeyValueSource {
  /**
   * pageSize: most values a page holds. pageBytes and keysOnly are hints (a live etcd then sizes
   * pages by bytes, or sends no values); a source may ignore them.
   */
  pages(
    start: Uint8Array,
    end: Uint8Array,
    options?: { pageSize?: number; pageBytes?: number; keysOnly?: boolean },
  ): AsyncIterable<KeyValue[]>;
}

/** A sorted in-memory list (a snapshot) served as pages of a range. */
export function createMemorySource(sorted: readonly KeyValue[]): KeyValueSource {
  return {
    async *pages(start, end, options = {}) {
      const size = options.pageSize ?? 500;
      const s = Buffer.from(start);
      const e = Buffer.from(end);
      const openEnd = e.length === 1 && e[0] === 0;
      let page: KeyValue[] = [];
      for (const kv of sorted) {
        if (Buffer.compare(kv.key, s) < 0) continue;
        if (!openEnd && Buffer.compare(kv.key, e) >= 0) break;
        page.push(kv);
        if (page.length >= size) {
          yield page;
          page = [];
        }
      }
      if (page.length > 0) yield page;
    },
  };
}

/** Runs `fn` over items with at most `limit` in flight; results in input order. */
export async function mapPool<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    for (;;) {
      const i = next++;
      if (i >= items.length) return;
      out[i] = await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return out;
}

/**
 * Iterates `pages` while already fetching the next one: the round trip for page n+1 overlaps the
 * work on page n (at most one page is held ahead, so memory stays bounded).
 */
export async function* prefetched<T>(pages: AsyncIterable<T>): AsyncGenerator<T> {
  const it = pages[Symbol.asyncIterator]();
  let next = it.next();
  for (;;) {
    const r = await next;
    if (r.done) return;
    next = it.next();
    // An error of the prefetch surfaces on the next await; avoid an unhandled rejection meanwhile.
    next.catch(() => undefined);
    yield r.value;
  }
}

export interface WorkPage<T, P> {
  readonly items: readonly T[];
  /** Carried through to onPageDone (e.g. the page's last etcd key, for a checkpoint). */
  readonly tag: P;
}

/**
 * Runs `fn` over the items of a stream of pages with `concurrency` in flight, without waiting at page
 * boundaries: workers move on to the next page while the previous one finishes. `onPageDone` is called
 * once per page, strictly in page order, when all of that page and every page before it are done (the
 * checkpoint low-water mark). The first error stops new work and is rethrown once in-flight items end.
 */
export async function forEachInPages<T, R, P>(
  pages: AsyncIterable<WorkPage<T, P>>,
  concurrency: number,
  fn: (item: T) => Promise<R>,
  onPageDone: (tag: P, items: readonly T[], results: readonly R[]) => void,
): Promise<void> {
  interface PageState {
    readonly page: WorkPage<T, P>;
    readonly results: R[];
    remaining: number;
    next: number;
  }
  const it = prefetched(pages)[Symbol.asyncIterator]();
  const open: PageState[] = [];
  let current: PageState | undefined;
  let exhausted = false;
  let fetching: Promise<void> | undefined;
  let failure: { error: unknown } | undefined;

  const drain = (): void => {
    while (open.length > 0 && open[0]!.remaining === 0) {
      const done = open.shift()!;
      onPageDone(done.page.tag, done.page.items, done.results);
    }
  };
  const fetchPage = async (): Promise<void> => {
    const r = await it.next();
    if (r.done) {
      exhausted = true;
      return;
    }
    const state: PageState = { page: r.value, results: new Array<R>(r.value.items.length), remaining: r.value.items.length, next: 0 };
    open.push(state);
    current = state;
    drain();
  };
  const take = async (): Promise<[PageState, number] | undefined> => {
    for (;;) {
      if (failure) return undefined;
      if (current && current.next < current.page.items.length) return [current, current.next++];
      if (exhausted) return undefined;
      fetching ??= fetchPage().finally(() => {
        fetching = undefined;
      });
      await fetching;
    }
  };
  const worker = async (): Promise<void> => {
    for (;;) {
      let slot: [PageState, number] | undefined;
      try {
        slot = await take();
      } catch (error) {
        failure ??= { error };
        return;
      }
      if (!slot) return;
      const [state, i] = slot;
      try {
        state.results[i] = await fn(state.page.items[i]!);
      } catch (error) {
        failure ??= { error };
        return;
      }
      state.remaining--;
      if (!failure) drain();
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, concurrency) }, worker));
  if (failure) throw failure.error;
}
