// Bounded-concurrency work over paged lists, shared by the etcd tools (scan, rewrite) and
// `rewrite --via-api`: a page is fetched ahead while the previous one is worked on, and completion is
// reported strictly in list order, so a checkpoint never claims an item still in flight. Knows
// nothing of etcd or the API server: pages are plain arrays.

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

export interface PagedWorkOptions<T, R> {
  /** Once aborted, no new item starts and no new page is fetched; items in flight finish. */
  readonly signal?: AbortSignal;
  /**
   * Called for each item in list order, as soon as it and every item before it are done: the
   * checkpoint low-water mark at item grain (onPageDone is the same at page grain).
   */
  readonly onItemDone?: (item: T, result: R) => void;
}

interface PageState<T, R, P> {
  readonly page: WorkPage<T, P>;
  readonly results: R[];
  readonly done: boolean[];
  /** Items of this page already reported done, in order. */
  reported: number;
  /** The next item to hand to a worker. */
  next: number;
}

/**
 * Runs `fn` over the items of a stream of pages with `concurrency` in flight, without waiting at page
 * boundaries: workers move on to the next page while the previous one finishes. `onPageDone` is called
 * once per page, strictly in page order, when all of that page and every page before it are done (the
 * checkpoint low-water mark). The first error stops new work and is rethrown once in-flight items end.
 * Resolves true when every item of every page was done, false when the signal stopped the work early.
 */
export async function forEachInPages<T, R, P>(
  pages: AsyncIterable<WorkPage<T, P>>,
  concurrency: number,
  fn: (item: T) => Promise<R>,
  onPageDone: (tag: P, items: readonly T[], results: readonly R[]) => void,
  options: PagedWorkOptions<T, R> = {},
): Promise<boolean> {
  const it = prefetched(pages)[Symbol.asyncIterator]();
  const open: PageState<T, R, P>[] = [];
  let current: PageState<T, R, P> | undefined;
  let exhausted = false;
  let stopped = false;
  let fetching: Promise<void> | undefined;
  let failure: { error: unknown } | undefined;

  const drain = (): void => {
    while (open.length > 0) {
      const head = open[0]!;
      const { items } = head.page;
      for (; head.reported < items.length && head.done[head.reported]; head.reported++) {
        options.onItemDone?.(items[head.reported]!, head.results[head.reported]!);
      }
      if (head.reported < items.length) return;
      open.shift();
      onPageDone(head.page.tag, items, head.results);
    }
  };
  const fetchPage = async (): Promise<void> => {
    const r = await it.next();
    if (r.done) {
      exhausted = true;
      return;
    }
    const n = r.value.items.length;
    current = { page: r.value, results: new Array<R>(n), done: new Array<boolean>(n).fill(false), reported: 0, next: 0 };
    open.push(current);
    drain();
  };
  /** The next item to work on, or undefined when there is none (or no more may start). */
  const take = async (): Promise<[PageState<T, R, P>, number] | undefined> => {
    for (;;) {
      if (failure) return undefined;
      const more = current !== undefined && current.next < current.page.items.length;
      if (!more && exhausted) return undefined;
      if (options.signal?.aborted === true) {
        stopped = true;
        return undefined;
      }
      if (more) return [current!, current!.next++];
      fetching ??= fetchPage().finally(() => {
        fetching = undefined;
      });
      await fetching;
    }
  };
  const worker = async (): Promise<void> => {
    for (;;) {
      let slot: [PageState<T, R, P>, number] | undefined;
      try {
        slot = await take();
        if (!slot) return;
        const [state, i] = slot;
        state.results[i] = await fn(state.page.items[i]!);
        state.done[i] = true;
      } catch (error) {
        failure ??= { error };
        return;
      }
      if (!failure) drain();
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, concurrency) }, worker));
  if (failure) throw failure.error;
  return !stopped;
}
