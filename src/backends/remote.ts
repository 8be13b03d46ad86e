// What every remote key manager (PKCS#11 token, AWS KMS, Vault Transit) shares, around the few
// calls that differ (a KekService): the cached current key id refreshed in the background (so a
// rotation done in the key manager is noticed without a restart and Status stays cheap), the
// self-describing envelope, the optional local KEK tier, retries of transient failures, and health.

import { defaultRandom } from '../random.js';
import { AtrestError, BackendError, type BackendErrorKind } from '../errors.js';
import type { BackendHealth, KeyBackend, UnwrapRequest, WrapRequest, Wrapped } from './backend.js';
import {
  LOCAL_KEK_ANNOTATION,
  encodeDirect,
  encodeLocal,
  envelopeHeader,
  kekDigest,
  parseEnvelope,
} from './envelope.js';
import { bytesEqual, asBuffer } from '../bytes.js';
import {
  DEFAULT_LOCAL_KEK_OPTIONS,
  createLocalKekTier,
  type LocalKekOptions,
  type LocalKekTier,
} from './local-kek.js';
import { REAL_CLOCK, withRetry, type RetryClock, type RetryOptions } from '../retry.js';
import type { Logger } from '../logger.js';
import { silentLogger } from '../logger.js';

/** The calls that differ between remote key managers. Each throws only BackendError / AtrestError. */
export interface KekService {
  readonly name: string;
  /** Asks the key manager which key wraps now and returns its key id (the v2 key_id). */
  resolveKeyID(signal: AbortSignal): Promise<string>;
  /** Remote wrap under the key named by `keyID`, binding `aad`. */
  encrypt(keyID: string, plaintext: Buffer, aad: Buffer, signal: AbortSignal): Promise<Buffer>;
  /** Remote unwrap; a key id this service does not recognise is ERR_KEY_UNKNOWN. */
  decrypt(keyID: string, ciphertext: Buffer, aad: Buffer, signal: AbortSignal): Promise<Buffer>;
  /** Re-reads credentials (PIN, token files) on SIGHUP. */
  reload?(): Promise<void>;
  close(): Promise<void>;
}

export interface RemoteCallCounts {
  readonly resolve: number;
  readonly encrypt: number;
  readonly decrypt: number;
}

/** A KeyBackend over a remote key manager, with the extras the plugin and the bench use. */
export interface RemoteKeyBackend extends KeyBackend {
  health(): BackendHealth;
  /** Asks the key manager for the current key id now (the background loop does this periodically). */
  refresh(): Promise<string>;
  /** Remote calls made so far (every attempt counts). */
  remoteCalls(): RemoteCallCounts;
}

export interface RemoteBackendOptions {
  /** Seal DEKs under a local KEK wrapped once by the key manager (default: on). */
  readonly localKEK?: false | Partial<LocalKekOptions>;
  /** How often the current key id is re-read from the key manager (default 30 s). */
  readonly refreshIntervalMs?: number;
  /** Re-read period after a failed refresh (default 5 s). */
  readonly refreshRetryMs?: number;
  /** Timeout of one remote call (default 2 s). */
  readonly callTimeoutMs?: number;
  readonly retry?: RetryPolicy;
  readonly logger?: Logger;
  readonly random?: (n: number) => Buffer;
  readonly now?: () => number;
  readonly retryDeps?: RetryDeps;
  /** Start the background refresh loop (default true; tests of one call may turn it off). */
  readonly background?: boolean;
}

/**
 * Retries of one remote call: only while its failure is transient (throttled or unavailable), with
 * exponential backoff and full jitter, inside a total time budget below kube-apiserver's per-call
 * timeout (3 s by default). Every other kind fails at once: a user-induced error such as a wrong HSM
 * PIN must never be retried in a loop (HSMs lock the token after a few wrong PINs).
 */
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

/** Time, sleeping and jitter of the retries (tests inject their own). */
export type RetryDeps = RetryClock;

/** The options of src/retry.ts that carry out a RetryPolicy for a remote key manager. */
export function remoteRetryOptions(policy: RetryPolicy, clock: RetryDeps): RetryOptions {
  return {
    ...policy,
    jitter: true,
    atBudget: 'give-up',
    isRetryable: (err) =>
      err instanceof BackendError && (err.kind === 'throttled' || err.kind === 'unavailable'),
    clock,
  };
}

function describe(err: unknown): { kind: BackendErrorKind; message: string } {
  if (err instanceof BackendError) return { kind: err.kind, message: err.message };
  if (err instanceof AtrestError) return { kind: 'user-induced', message: err.message };
  return { kind: 'other', message: err instanceof Error ? err.message : String(err) };
}

export function createRemoteBackend(
  service: KekService,
  options: RemoteBackendOptions = {},
): RemoteKeyBackend {
  const logger = options.logger ?? silentLogger;
  const now = options.now ?? Date.now;
  const random = options.random ?? defaultRandom;
  const refreshIntervalMs = options.refreshIntervalMs ?? 30_000;
  const refreshRetryMs = options.refreshRetryMs ?? 5_000;
  const callTimeoutMs = options.callTimeoutMs ?? 2_000;
  const policy = options.retry ?? DEFAULT_RETRY_POLICY;
  const retryOptions = remoteRetryOptions(policy, options.retryDeps ?? REAL_CLOCK);
  const tierEnabled = options.localKEK !== false;
  const counts = { resolve: 0, encrypt: 0, decrypt: 0 };

  let keyID: string | undefined;
  let resolving: Promise<string> | undefined;
  let health: BackendHealth = { ok: false, kind: 'unavailable', message: 'not checked yet' };
  let timer: NodeJS.Timeout | undefined;
  let closed = false;

  /**
   * One remote operation with retries. `cancel` is the caller's signal (a gRPC call the client gave
   * up on): it stops the attempt in flight and any retry, and its reason is what the caller gets. A
   * cancelled call says nothing about the key manager's health.
   */
  function call<T>(
    what: keyof typeof counts,
    op: (signal: AbortSignal) => Promise<T>,
    cancel?: AbortSignal,
  ): Promise<T> {
    return withRetry(
      () => {
        const timeout = AbortSignal.timeout(callTimeoutMs);
        return op(cancel === undefined ? timeout : AbortSignal.any([timeout, cancel]));
      },
      {
        ...retryOptions,
        ...(cancel === undefined ? {} : { signal: cancel }),
        onAttempt: () => void counts[what]++,
      },
    ).then(
      (v) => {
        markOk();
        return v;
      },
      (err: unknown) => {
        if (cancel?.aborted === true) throw cancel.reason;
        // A bad ciphertext or an unknown key id is the request's problem, not the backend's.
        if (!(err instanceof BackendError && err.kind === 'corruption') && !isRequestProblem(err)) {
          markFailed(err);
        }
        throw err;
      },
    );
  }

  function isRequestProblem(err: unknown): boolean {
    return err instanceof AtrestError && !(err instanceof BackendError);
  }

  function markOk(): void {
    const t = now();
    health = { ok: true, message: 'ok', lastSuccessMs: t, checkedAtMs: t };
  }

  function markFailed(err: unknown): void {
    const d = describe(err);
    health = {
      ok: false,
      kind: d.kind,
      message: d.message,
      checkedAtMs: now(),
      ...(health.lastSuccessMs !== undefined ? { lastSuccessMs: health.lastSuccessMs } : {}),
    };
  }

  const tier: LocalKekTier = createLocalKekTier(
    { ...DEFAULT_LOCAL_KEK_OPTIONS, ...(options.localKEK === false ? {} : options.localKEK) },
    {
      remoteWrap: (id, kek, aad) => call('encrypt', (s) => service.encrypt(id, kek, aad, s)),
      remoteUnwrap: (id, wrapped, aad) =>
        call('decrypt', (s) => service.decrypt(id, wrapped, aad, s)),
      random,
      now,
    },
  );

  async function refresh(): Promise<string> {
    if (closed) throw new BackendError(service.name, 'other', 'the backend is closed');
    if (resolving !== undefined) return resolving;
    const pending = call('resolve', (s) => service.resolveKeyID(s)).then(
      (id) => {
        if (keyID !== undefined && keyID !== id) {
          logger.info('key manager rotated: new key id', {
            backend: service.name,
            keyID: id,
            previous: keyID,
          });
        }
        keyID = id;
        return id;
      },
      (err: unknown) => {
        // The key manager says no (key disabled or deleted, access revoked): follow it within one
        // refresh interval. Drop every cached local KEK, so nothing keeps wrapping or unwrapping
        // locally behind its back; the next calls go to the key manager and get its answer.
        if (err instanceof BackendError && err.kind === 'user-induced') tier.clear();
        throw err;
      },
    );
    resolving = pending;
    try {
      return await pending;
    } finally {
      resolving = undefined;
    }
  }

  function schedule(ms: number): void {
    if (closed || options.background === false) return;
    timer = setTimeout(() => {
      refresh().then(
        () => schedule(refreshIntervalMs),
        (err: unknown) => {
          logger.warn('key manager refresh failed', {
            backend: service.name,
            error: describe(err).message,
          });
          schedule(refreshRetryMs);
        },
      );
    }, ms);
    timer.unref();
  }

  // First look right away; a key manager that is down at start only makes us unhealthy.
  if (options.background !== false) {
    refresh().then(
      () => schedule(refreshIntervalMs),
      (err: unknown) => {
        logger.warn('key manager not reachable at start', {
          backend: service.name,
          error: describe(err).message,
        });
        schedule(refreshRetryMs);
      },
    );
  }

  async function currentKeyID(): Promise<string> {
    return keyID ?? refresh();
  }

  return {
    name: service.name,
    currentKeyID,

    async wrap(request: WrapRequest): Promise<Wrapped> {
      const id = await currentKeyID();
      if (tierEnabled) {
        const sealed = await tier.seal(id, request.plaintext);
        const inline = request.annotationsAllowed !== true;
        const ciphertext = encodeLocal(sealed, inline);
        return inline
          ? { ciphertext, keyID: id }
          : { ciphertext, keyID: id, annotations: { [LOCAL_KEK_ANNOTATION]: sealed.wrappedKEK } };
      }
      const header = envelopeHeader('direct', id);
      // Direct mode: the caller's signal reaches the key manager call. (The local-KEK tier's remote
      // calls are shared by every caller waiting on them, so no single caller can cancel them.)
      const remote = await call(
        'encrypt',
        (s) => service.encrypt(id, asBuffer(request.plaintext), header, s),
        request.signal,
      );
      return { ciphertext: encodeDirect(id, remote), keyID: id };
    },

    async unwrap(request: UnwrapRequest): Promise<Buffer> {
      const env = parseEnvelope(request.ciphertext);
      if (request.keyID !== undefined && request.keyID !== env.keyID) {
        throw new AtrestError(
          'ERR_KEY_ID_MISMATCH',
          `the request's key id does not match the key id stored in the ciphertext (${env.keyID})`,
        );
      }
      if (env.mode === 'direct') {
        return call(
          'decrypt',
          (s) => service.decrypt(env.keyID, env.remote, env.header, s),
          request.signal,
        );
      }
      let wrappedKEK = env.wrappedKEK;
      if (wrappedKEK === undefined) {
        const fromAnnotation = request.annotations?.[LOCAL_KEK_ANNOTATION];
        if (fromAnnotation === undefined) {
          throw new AtrestError(
            'ERR_REQUEST_INVALID',
            `the ciphertext refers to a local KEK carried in the ${LOCAL_KEK_ANNOTATION} annotation, which the request lacks`,
          );
        }
        wrappedKEK = asBuffer(fromAnnotation);
        if (!bytesEqual(kekDigest(wrappedKEK), env.kekDigest)) {
          throw new AtrestError(
            'ERR_REQUEST_INVALID',
            `the ${LOCAL_KEK_ANNOTATION} annotation does not belong to this ciphertext`,
          );
        }
      }
      return tier.open(env.keyID, wrappedKEK, env.kekDigest, env.nonce, env.sealed, env.tag);
    },

    async reload(): Promise<void> {
      await service.reload?.();
      await refresh();
    },

    async close(): Promise<void> {
      closed = true;
      if (timer !== undefined) clearTimeout(timer);
      await resolving?.catch(() => undefined);
      tier.clear();
      await service.close();
    },

    health: () => health,
    refresh,
    remoteCalls: () => ({ ...counts }),
  };
}
