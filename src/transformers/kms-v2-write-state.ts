// kube-apiserver's kms v2 write state: one encrypted seed in use, kept while Status reports the same
// key_id, replaced (a new seed, one Encrypt) when the key_id changes; writes are refused 3 minutes
// after the last good Status. No timers here: Status polling (kms-v2-status.ts) drives it.

import { AtrestError } from '../errors.js';
import { DEK_SOURCE_HKDF_SHA256_XNONCE_AES_GCM_SEED } from '../proto/encrypted-object.js';
import { createAesGcmSeedTransformer } from './aes-gcm.js';
import type { RandomSource } from '../random.js';
import type { KmsV2EncryptResult, KmsV2Service } from './kms-services.js';
import { KMS_V2_SEED_SIZE, kmsV2CacheKey } from './kms-v2-format.js';
import {
  keyIDHash,
  validateAnnotations,
  validateEncryptedDEKSource,
  validateKeyID,
} from './kms-v2-validation.js';
import type { Transformer } from './transformer.js';

/** Writes stay allowed this long after the last good Status (kmsv2PluginWriteDEKSourceMaxTTL). */
export const KMS_V2_WRITE_STATE_TTL_MS = 3 * 60_000;

/** The current write state, as tools may show it (no key material). */
export interface KmsV2StateInfo {
  readonly keyID: string;
  readonly keyIDHash: string;
  readonly sourceType: number;
  /** Writes are refused after this instant (ms since the epoch) unless a good Status extends it. */
  readonly expiresAt: number;
  /** The uid of the Encrypt call that produced the encrypted seed. */
  readonly uid: string;
  readonly annotationKeys: readonly string[];
}

export interface WriteState {
  readonly transformer: Transformer;
  readonly keyID: string;
  readonly encryptedDEKSource: Buffer;
  readonly annotations: Readonly<Record<string, Buffer>>;
  readonly sourceType: number;
  readonly uid: string;
  readonly expiresAt: number;
  readonly cacheKey: string;
}

export interface WriteStateMachine {
  /** The state, expired or not; undefined before the first successful Status and Encrypt. */
  current(): WriteState | undefined;
  /** The state to write with now: throws ERR_KMS_STATE when there is none or it has expired. */
  forWrite(): WriteState;
  /**
   * After a Status with a valid key_id: keep the seed (and extend its window) if the key_id is
   * unchanged, else a new seed and one Encrypt. Returns why the rotation failed, or undefined.
   */
  rotateOnKeyIDChange(statusKeyID: string, uid: string): Promise<string | undefined>;
  info(): KmsV2StateInfo | undefined;
}

export interface WriteStateOptions {
  readonly name: string;
  readonly service: KmsV2Service;
  readonly now: () => number;
  readonly random: RandomSource;
  /** A new seed is in use: its transformer belongs in the read cache under its key. */
  readonly onNewSeed: (cacheKey: string, transformer: Transformer) => void;
}

export function createWriteStateMachine(options: WriteStateOptions): WriteStateMachine {
  const { name, service, now, random } = options;
  let state: WriteState | undefined;

  async function rotateOnKeyIDChange(
    statusKeyID: string,
    uid: string,
  ): Promise<string | undefined> {
    const expiresAt = now() + KMS_V2_WRITE_STATE_TTL_MS;
    const current = state;
    if (current && current.keyID === statusKeyID) {
      state = { ...current, expiresAt };
      return undefined;
    }
    const seed = random(KMS_V2_SEED_SIZE);
    let errGen: string;
    let encryptKeyID = '';
    try {
      const resp = await service.encrypt(seed, uid);
      encryptKeyID = resp.keyID;
      const problems = encryptProblems(resp, statusKeyID);
      if (problems.length === 0) {
        state = seedState(resp, createAesGcmSeedTransformer(seed, { random }), uid, expiresAt);
        options.onNewSeed(state.cacheKey, state.transformer);
        return undefined;
      }
      errGen = problems.join('; ');
    } catch (cause) {
      const reason = cause instanceof Error ? cause.message : String(cause);
      errGen = `failed to encrypt DEK, error: ${reason}`;
    } finally {
      seed.fill(0);
    }
    return (
      `failed to rotate DEK uid=${JSON.stringify(uid)}, useSeed=true, ` +
      `errState=${current ? 'none' : 'got unexpected nil transformer'}, ` +
      `errGen=${errGen}, statusKeyIDHash=${JSON.stringify(keyIDHash(statusKeyID))}, ` +
      `encryptKeyIDHash=${JSON.stringify(keyIDHash(encryptKeyID))}, ` +
      `stateKeyIDHash=${JSON.stringify(keyIDHash(current?.keyID ?? ''))}, ` +
      `expirationTimestamp=${rfc3339(current?.expiresAt ?? 0)}`
    );
  }

  return {
    current: () => state,
    forWrite() {
      const current = state;
      if (current === undefined) throw noWriteState(name);
      const at = now();
      if (at > current.expiresAt) {
        throw new AtrestError(
          'ERR_KMS_STATE',
          `encryptedDEKSource with keyID hash ${JSON.stringify(keyIDHash(current.keyID))} expired at ` +
            `${rfc3339(current.expiresAt)} (current time is ${rfc3339(at)})`,
        );
      }
      return current;
    },
    rotateOnKeyIDChange,
    info() {
      const s = state;
      if (s === undefined) return undefined;
      return {
        keyID: s.keyID,
        keyIDHash: keyIDHash(s.keyID),
        sourceType: s.sourceType,
        expiresAt: s.expiresAt,
        uid: s.uid,
        annotationKeys: Object.keys(s.annotations).sort(),
      };
    },
  };
}

/** What kube-apiserver refuses in an Encrypt answer for a new seed. */
function encryptProblems(resp: KmsV2EncryptResult, statusKeyID: string): string[] {
  const problems: string[] = [];
  const src = validateEncryptedDEKSource(resp.ciphertext);
  if (src) problems.push(src);
  const kid = validateKeyID(resp.keyID);
  if (kid) problems.push(kid);
  problems.push(...validateAnnotations(resp.annotations));
  if (problems.length === 0 && resp.keyID !== statusKeyID) {
    problems.push('the key_id of Encrypt differs from the key_id of Status');
  }
  return problems;
}

function seedState(
  resp: KmsV2EncryptResult,
  transformer: Transformer,
  uid: string,
  expiresAt: number,
): WriteState {
  const sourceType = DEK_SOURCE_HKDF_SHA256_XNONCE_AES_GCM_SEED;
  const annotations: Record<string, Buffer> = {};
  for (const [k, v] of Object.entries(resp.annotations)) annotations[k] = Buffer.from(v);
  const encryptedDEKSource = Buffer.from(resp.ciphertext);
  return {
    transformer,
    keyID: resp.keyID,
    encryptedDEKSource,
    annotations,
    sourceType,
    uid,
    expiresAt,
    cacheKey: kmsV2CacheKey(sourceType, encryptedDEKSource, resp.keyID, annotations),
  };
}

/** No successful Status and Encrypt yet: the words kube-apiserver uses. */
export function noWriteState(name: string): AtrestError {
  return new AtrestError(
    'ERR_KMS_STATE',
    `kms v2 provider "${name}" has no usable state yet (no successful Status and Encrypt): got unexpected nil transformer`,
  );
}

function rfc3339(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}
