// Retries a remote key-manager call while its failure is transient (throttled or unavailable), with
// exponential backoff and full jitter, inside a total time budget below kube-apiserver's per-call
// timeout (3 s by default). Every other kind fails at once: a user-induced error such as a wrong
// HSM PIN must never be retried in a loop (HSMs lock the token after a few wrong PINs).

import { BackendError } from '../errors.js';

export interface RetryPolicy {
  /** Most attempts in total, the first included. */
  readonly attempts: number;
  /** First backoff ceiling; doubles per attempt. */
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
  /** No new attempt starts once this much time has passed since the first. */
  readonly budgetMs: number;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = {
  attempts: 4,
  baseDelayMs: 50,
  maxDelayMs: 800,
  budgetMs: 2500,
};

export interface RetryDeps {
  readonly now: () => number;
  readonly sleep: (ms: number) => Promise<void>;
  /** Uniform in [0, 1). */
  readonly random: () => number;
}

export const realRetryDeps: RetryDeps = {
  now: () => Date.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
  random: () => Math.random(),
};

export function isRetryable(err: unknown): boolean {
  return err instanceof BackendError && (err.kind === 'throttled' || err.kind === 'unavailable');
}

/** Runs `op` (given the 1-based attempt number) until it succeeds, fails for good, or the budget ends. */
export async function withRetry<T>(
  op: (attempt: number) => Promise<T>,
  policy: RetryPolicy,
  deps: RetryDeps,
): Promise<T> {
  const started = deps.now();
  for (let attempt = 1; ; attempt++) {
    try {
      return await op(attempt);
    } catch (err) {
      if (!isRetryable(err) || attempt >= policy.attempts) throw err;
      const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (attempt - 1));
      const delay = Math.floor(deps.random() * ceiling);
      if (deps.now() - started + delay >= policy.budgetMs) throw err;
      await deps.sleep(delay);
    }
  }
}
