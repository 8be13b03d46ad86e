// kube-apiserver's Status checks of a kms v2 plugin: each Status is validated (healthz, version,
// key_id) and hands its key_id to the write state; checks in flight are shared, results reused for
// their TTL (kms-health.ts), and polled every 60 s (10 s after a failure) on injected timers.

import { AtrestError } from '../errors.js';
import { V2_API_VERSION, V2_HEALTHZ_OK, V2_STATUS_VERSIONS } from '../proto/kms-v2.js';
import { freshHealth, type KmsHealth } from './kms-health.js';
import { kmsCallFailed, type KmsV2Service } from './kms-services.js';
import { keyIDHash, validateKeyID } from './kms-v2-validation.js';

export const KMS_V2_POLL_HEALTHY_MS = 60_000;
export const KMS_V2_POLL_UNHEALTHY_MS = 10_000;
/** Status versions kube-apiserver >= 1.29 accepts ("v2beta1" is what 1.27/1.28 require). */
export const KMS_V2_ACCEPTED_VERSIONS: readonly string[] = V2_STATUS_VERSIONS;

export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export interface PollingOptions {
  readonly healthyIntervalMs?: number;
  readonly unhealthyIntervalMs?: number;
  /** Run the first check now (as the API server does when it loads the config); default true. */
  readonly immediate?: boolean;
  readonly timers?: Timers;
  readonly onResult?: (health: KmsHealth) => void;
}

export interface PollingHandle {
  stop(): void;
}

export interface StatusChecks {
  /** Calls Status now, validates it and rotates the seed if the key_id changed (or there is no state). */
  refreshStatus(): Promise<KmsHealth>;
  /** refreshStatus with the upstream result cache: reused 20 s after success, 3 s after failure. */
  healthz(): Promise<KmsHealth>;
  /** Background Status polling: every healthyIntervalMs (60 s), every unhealthyIntervalMs (10 s) after a failure. */
  startPolling(options?: PollingOptions): PollingHandle;
}

export interface StatusCheckOptions {
  readonly name: string;
  readonly service: KmsV2Service;
  readonly now: () => number;
  readonly newUID: () => string;
  /** The write state's reaction to a valid key_id (kms-v2-write-state.ts): why it failed, or undefined. */
  readonly rotateOnKeyIDChange: (statusKeyID: string, uid: string) => Promise<string | undefined>;
}

const defaultTimers: Timers = {
  setTimeout(fn, ms) {
    const t = setTimeout(fn, ms);
    t.unref();
    return t;
  },
  clearTimeout(handle) {
    clearTimeout(handle as ReturnType<typeof setTimeout>);
  },
};

export function createStatusChecks(options: StatusCheckOptions): StatusChecks {
  const { name, service, now } = options;
  let acceptedVersion: string | undefined;
  let inflight: Promise<KmsHealth> | undefined;
  let lastHealth: KmsHealth | undefined;

  /** The version must be one kube-apiserver accepts, and stay the one it first saw. */
  function versionProblem(version: string): AtrestError | undefined {
    if (!KMS_V2_ACCEPTED_VERSIONS.includes(version)) {
      return new AtrestError(
        'ERR_KMS_VERSION',
        `expected KMSv2 API version ${V2_API_VERSION}, got ${version}`,
      );
    }
    acceptedVersion ??= version;
    if (acceptedVersion === version) return undefined;
    return new AtrestError(
      'ERR_KMS_VERSION',
      `KMSv2 API version should not change after the initial status response version ${acceptedVersion}, got ${version}`,
    );
  }

  async function statusErrors(): Promise<AtrestError[]> {
    const errors: AtrestError[] = [];
    try {
      const status = await service.status();
      if (status.healthz !== V2_HEALTHZ_OK) {
        errors.push(
          new AtrestError('ERR_UNHEALTHY', `got unexpected healthz status: ${status.healthz}`),
        );
      }
      const version = versionProblem(status.version);
      if (version) errors.push(version);
      const keyIDProblem = validateKeyID(status.keyID);
      if (keyIDProblem) {
        errors.push(
          new AtrestError(
            'ERR_KMS_RESPONSE_INVALID',
            `got invalid KMSv2 KeyID hash ${JSON.stringify(keyIDHash(status.keyID))}: ${keyIDProblem}`,
          ),
        );
      } else {
        // Rotation runs even when healthz or version are wrong; those still make the check fail.
        const rotation = await options.rotateOnKeyIDChange(status.keyID, options.newUID());
        if (rotation) errors.push(new AtrestError('ERR_KMS_STATE', rotation));
      }
    } catch (cause) {
      errors.push(kmsCallFailed('failed to get kmsv2 plugin status', cause));
    }
    return errors;
  }

  async function checkStatus(): Promise<KmsHealth> {
    const checkedAt = now();
    const errors = await statusErrors();
    if (errors.length === 0) return { ok: true, checkedAt };
    const text =
      errors.length === 1 ? errors[0]!.message : `[${errors.map((e) => e.message).join(', ')}]`;
    return {
      ok: false,
      checkedAt,
      error: new AtrestError(
        errors[0]!.code,
        `kmsv2 Provider ${name} is not healthy, error: ${text}`,
        { cause: errors.length === 1 ? errors[0] : errors },
      ),
    };
  }

  function refreshStatus(): Promise<KmsHealth> {
    inflight ??= checkStatus()
      .catch(
        (cause: unknown): KmsHealth => ({
          ok: false,
          checkedAt: now(),
          error: kmsCallFailed('kmsv2 Provider status check failed', cause),
        }),
      )
      .then((h) => {
        inflight = undefined;
        lastHealth = h;
        return h;
      });
    return inflight;
  }

  return {
    refreshStatus,
    healthz: () => Promise.resolve(freshHealth(lastHealth, now()) ?? refreshStatus()),
    startPolling: (pollOptions = {}) => startPolling(refreshStatus, pollOptions),
  };
}

function startPolling(
  refreshStatus: () => Promise<KmsHealth>,
  options: PollingOptions,
): PollingHandle {
  const timers = options.timers ?? defaultTimers;
  const healthyMs = options.healthyIntervalMs ?? KMS_V2_POLL_HEALTHY_MS;
  const unhealthyMs = options.unhealthyIntervalMs ?? KMS_V2_POLL_UNHEALTHY_MS;
  let stopped = false;
  let handle: unknown;
  const schedule = (ms: number): void => {
    if (!stopped) handle = timers.setTimeout(() => void run(), ms);
  };
  const run = async (): Promise<void> => {
    handle = undefined;
    if (stopped) return;
    const h = await refreshStatus();
    options.onResult?.(h);
    schedule(h.ok ? healthyMs : unhealthyMs);
  };
  if (options.immediate ?? true) void run();
  else schedule(healthyMs);
  return {
    stop() {
      stopped = true;
      if (handle !== undefined) timers.clearTimeout(handle);
      handle = undefined;
    },
  };
}
