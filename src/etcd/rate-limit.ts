// A token bucket for `atrest rewrite --rate R` (writes per second). Time and sleeping are injected so
// the engine stays testable; a rate of 0 or less means unlimited.

export interface RateLimiter {
  /** Resolves when one more operation may start. */
  acquire(): Promise<void>;
}

export interface RateLimiterOptions {
  readonly now?: () => number;
  readonly sleep?: (ms: number) => Promise<void>;
  /** Largest burst after an idle period; defaults to one second's worth (at least 1). */
  readonly burst?: number;
}

const realSleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function createRateLimiter(perSecond: number, options: RateLimiterOptions = {}): RateLimiter {
  if (!(perSecond > 0) || !Number.isFinite(perSecond)) return { acquire: async () => {} };
  const now = options.now ?? (() => performance.now());
  const sleep = options.sleep ?? realSleep;
  const burst = Math.max(1, options.burst ?? Math.ceil(perSecond));
  let tokens = 1;
  let last = now();
  // Callers are served in arrival order: each waits for the one before it.
  let queue: Promise<void> = Promise.resolve();

  const take = async (): Promise<void> => {
    for (;;) {
      const t = now();
      tokens = Math.min(burst, tokens + ((t - last) / 1000) * perSecond);
      last = t;
      if (tokens >= 1) {
        tokens -= 1;
        return;
      }
      await sleep(((1 - tokens) / perSecond) * 1000);
    }
  };

  return {
    acquire(): Promise<void> {
      const turn = queue.then(take);
      queue = turn.catch(() => {});
      return turn;
    },
  };
}
