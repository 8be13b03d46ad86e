// Where key-values come from: a live etcd (paged ranges) or a snapshot file already read into
// memory. Scan and decrypt work over either; rewrite needs the live client.

import type { KeyValue } from './client.js';

export interface KeyValueSource {
  pages(start: Uint8Array, end: Uint8Array, options?: { pageSize?: number }): AsyncIterable<KeyValue[]>;
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
