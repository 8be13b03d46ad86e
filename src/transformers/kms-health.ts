// The health of a kms provider as kube-apiserver judges it, shared by kms v1 and kms v2: the result
// type, and how long a result is reused before the plugin is asked again.

import type { AtrestError } from '../errors.js';

/** A health result is reused for 20 s after success and 3 s after failure (as kube-apiserver does). */
export const KMS_HEALTHZ_POSITIVE_TTL_MS = 20_000;
export const KMS_HEALTHZ_NEGATIVE_TTL_MS = 3_000;

export interface KmsHealth {
  readonly ok: boolean;
  /** Why not ok; never carries key material. */
  readonly error?: AtrestError;
  /** When the underlying check ran (ms since the epoch, from the injected clock). */
  readonly checkedAt: number;
}

/** The last result if it is still within its TTL at `at`; undefined when the plugin must be asked. */
export function freshHealth(last: KmsHealth | undefined, at: number): KmsHealth | undefined {
  if (last === undefined) return undefined;
  const ttl = last.ok ? KMS_HEALTHZ_POSITIVE_TTL_MS : KMS_HEALTHZ_NEGATIVE_TTL_MS;
  return at - last.checkedAt < ttl ? last : undefined;
}
