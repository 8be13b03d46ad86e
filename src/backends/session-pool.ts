// A bounded pool of sessions with a key manager (PKCS#11 sessions here; any handle that only one call
// at a time may use). It knows nothing about Cryptoki: opening and closing are given to it.
//
// Guarantees, each by construction:
// - exclusive: a session belongs to exactly one call from the moment use() hands it over until that
//   call's promise settles, so a multi-step operation (init on the main thread, then the work on a
//   thread-pool thread) never shares its session;
// - bounded: at most `size` sessions are open or being opened at any time;
// - no lost waiter: a call waits in the queue only while `size` sessions are open or being opened,
//   each of which comes back (release) or fails (open error) and then hands its place to the first
//   waiter. A waiter handed a free place opens a session itself and gets that open's error if it
//   fails; it is never put back to wait for a release that may never come;
// - close() refuses new calls, fails every waiting call, and resolves once every session is closed,
//   after the calls in flight have finished with theirs.

export interface SessionPoolOptions<S> {
  /** Most sessions open (or being opened) at once; at least 1. */
  readonly size: number;
  /** Opens a new session. Its errors reach the call that needed the session. */
  readonly open: () => Promise<S>;
  /** Closes a session; must not throw (the session may already be gone). */
  readonly close: (session: S) => void;
  /** The error for a call made after close(), or still waiting at close(). */
  readonly closedError: () => Error;
  /** The error for a call whose signal aborted before it had a session. */
  readonly abortedError: (reason: unknown) => Error;
}

export interface SessionPoolStats {
  /** Sessions open or being opened. */
  readonly open: number;
  readonly idle: number;
  readonly waiting: number;
}

export interface SessionPool<S> {
  /**
   * Runs `fn` with a session no other call holds until `fn` settles. When `fn` fails and
   * `isBroken(err)` says so, the session is closed instead of reused.
   */
  use<T>(
    fn: (session: S) => Promise<T>,
    isBroken: (err: unknown) => boolean,
    signal?: AbortSignal,
  ): Promise<T>;
  close(): Promise<void>;
  stats(): SessionPoolStats;
}

/** What a waiter is handed: a session to use, or a reserved place to open one in. */
type Grant<S> = { readonly session: S } | { readonly session?: undefined };

interface Waiter<S> {
  grant(g: Grant<S>): void;
  fail(err: Error): void;
}

export function createSessionPool<S>(options: SessionPoolOptions<S>): SessionPool<S> {
  if (!Number.isInteger(options.size) || options.size < 1) {
    throw new RangeError(`session pool size must be a positive integer, got ${options.size}`);
  }
  const size = options.size;
  const idle: S[] = [];
  const waiters: Waiter<S>[] = [];
  /** Sessions open or being opened (each counted from the moment its place is reserved). */
  let open = 0;
  let closed = false;
  const drained: (() => void)[] = [];

  function closeOne(session: S): void {
    options.close(session);
    open--;
    if (closed && open === 0) for (const done of drained.splice(0)) done();
  }

  /** Hands free places to waiters; each then opens a session itself. */
  function wakeForPlaces(): void {
    while (!closed && open < size && waiters.length > 0) {
      open++;
      waiters.shift()!.grant({});
    }
  }

  /** Opens a session in a place already counted in `open`. */
  async function openReserved(): Promise<S> {
    let session: S;
    try {
      session = await options.open();
    } catch (err) {
      open--;
      if (closed && open === 0) for (const done of drained.splice(0)) done();
      wakeForPlaces();
      throw err;
    }
    if (closed) {
      closeOne(session);
      throw options.closedError();
    }
    return session;
  }

  async function acquire(signal: AbortSignal | undefined): Promise<S> {
    if (closed) throw options.closedError();
    if (signal?.aborted) throw options.abortedError(signal.reason);
    const free = idle.pop();
    if (free !== undefined) return free;
    if (open < size) {
      open++;
      return openReserved();
    }
    const g = await new Promise<Grant<S>>((resolve, reject) => {
      const onAbort = (): void => {
        const i = waiters.indexOf(waiter);
        if (i >= 0) waiters.splice(i, 1);
        reject(options.abortedError(signal!.reason));
      };
      const waiter: Waiter<S> = {
        grant(g) {
          signal?.removeEventListener('abort', onAbort);
          resolve(g);
        },
        fail(err) {
          signal?.removeEventListener('abort', onAbort);
          reject(err);
        },
      };
      waiters.push(waiter);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
    return g.session !== undefined ? g.session : openReserved();
  }

  function release(session: S, broken: boolean): void {
    if (broken || closed) {
      closeOne(session);
      wakeForPlaces();
      return;
    }
    const w = waiters.shift();
    if (w !== undefined) w.grant({ session });
    else idle.push(session);
  }

  return {
    async use(fn, isBroken, signal) {
      const session = await acquire(signal);
      if (signal?.aborted) {
        // Handed a session after the caller gave up: do not start work nobody waits for.
        release(session, false);
        throw options.abortedError(signal.reason);
      }
      let broken = false;
      try {
        return await fn(session);
      } catch (err) {
        broken = isBroken(err);
        throw err;
      } finally {
        release(session, broken);
      }
    },

    async close() {
      closed = true;
      const err = options.closedError();
      for (const w of waiters.splice(0)) w.fail(err);
      for (const s of idle.splice(0)) closeOne(s);
      if (open > 0) await new Promise<void>((resolve) => drained.push(resolve));
    },

    stats: () => ({ open, idle: idle.length, waiting: waiters.length }),
  };
}
