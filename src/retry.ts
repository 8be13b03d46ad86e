// The one retry-with-backoff loop of the project: the remote key backends, the Kubernetes API client
// of `rewrite --via-api` and the gRPC client's wait-for-ready all run their retries through it. It
// knows no error type: each caller says which of its failures are worth another attempt.

export interface RetryClock {
  now(): number;
  /** Waits `ms`; rejects with the signal's reason if it aborts first. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
  /** Uniform in [0, 1), for jitter (default Math.random). */
  random?(): number;
}

export interface RetryOptions {
  /** Most attempts in total, the first included (Infinity: until the budget or the signal ends it). */
  readonly attempts: number;
  /** The wait after the first failure; doubles per attempt up to maxDelayMs. */
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
  /** Full jitter: each wait is uniform in [0, the backoff) instead of the backoff itself. */
  readonly jitter?: boolean;
  /** Time allowed from the first attempt on (default: unlimited). */
  readonly budgetMs?: number;
  /**
   * What a wait that would end past the budget does: `give-up` (default) reports the last error at
   * once; `last-attempt` cuts the wait to end at the budget and tries once more there.
   */
  readonly atBudget?: 'give-up' | 'last-attempt';
  /** Whether a failure may be retried; any other failure passes through at once. */
  readonly isRetryable: (err: unknown) => boolean;
  /** A wait the failure itself asks for (an HTTP Retry-After), used instead of the backoff. */
  readonly delayHintMs?: (err: unknown) => number | undefined;
  /** Stops the waiting and any further attempt; its reason is what the caller then gets. */
  readonly signal?: AbortSignal;
  /** Called before every attempt (1-based), e.g. to count remote calls. */
  readonly onAttempt?: (attempt: number) => void;
  /** Called before each wait, e.g. to log the failure being retried. */
  readonly onRetry?: (info: { attempt: number; error: unknown; delayMs: number }) => void;
  readonly clock?: RetryClock;
}

export const REAL_CLOCK: RetryClock = { now: () => Date.now(), sleep: abortableSleep };

/** The wait after failed attempt `attempt` (1-based), before any budget cut. */
export function backoffDelay(options: RetryOptions, attempt: number, random: () => number): number {
  const ceiling = Math.min(options.maxDelayMs, options.baseDelayMs * 2 ** (attempt - 1));
  return options.jitter === true ? Math.floor(random() * ceiling) : ceiling;
}

/**
 * Runs `op` (given the 1-based attempt number) until it succeeds, fails with an error that is not
 * retryable, runs out of attempts or budget (the last error is thrown), or the signal aborts (its
 * reason is thrown).
 */
export async function withRetry<T>(
  op: (attempt: number) => Promise<T>,
  options: RetryOptions,
): Promise<T> {
  const clock = options.clock ?? REAL_CLOCK;
  const random = clock.random?.bind(clock) ?? Math.random;
  const started = clock.now();
  for (let attempt = 1; ; attempt++) {
    options.signal?.throwIfAborted();
    options.onAttempt?.(attempt);
    try {
      return await op(attempt);
    } catch (error) {
      if (!options.isRetryable(error) || attempt >= options.attempts) throw error;
      const wanted = options.delayHintMs?.(error) ?? backoffDelay(options, attempt, random);
      const delayMs = fitToBudget(options, wanted, clock.now() - started);
      if (delayMs === undefined) throw error;
      options.onRetry?.({ attempt, error, delayMs });
      await clock.sleep(delayMs, options.signal);
    }
  }
}

/** The wait to make, or undefined when the budget leaves no room for another attempt. */
function fitToBudget(options: RetryOptions, delayMs: number, elapsedMs: number): number | undefined {
  if (options.budgetMs === undefined) return delayMs;
  const left = options.budgetMs - elapsedMs;
  if (options.atBudget === 'last-attempt') return left > 0 ? Math.min(delayMs, left) : undefined;
  return elapsedMs + delayMs < options.budgetMs ? delayMs : undefined;
}

function abortableSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
