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

