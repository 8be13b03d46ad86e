// The kms v2 format and kube-apiserver's state machine around it (Status polling, seed rotation on a key_id
// change, the 3-minute write window). Pure: the plugin is reached only through the injected KmsV2Service;
// time, randomness, uids and timers are injected.
//
//   value (after `k8s:enc:kms:v2:<name>:`) = protobuf EncryptedObject {
//     1 encryptedData  = [info 32][nonce 12][ct][tag 16]   (type 1, written here and by >= 1.29)
//                      | [nonce 12][ct][tag 16]            (type 0, written by 1.25–1.28; read only)
//     2 keyID, 3 encryptedDEKSource, 4 annotations, 5 encryptedDEKSourceType (0 is not emitted) }
//   AAD = etcd key; type 1 DEK = HMAC-SHA256(seed, info || 0x01); type 0 DEK = Decrypt(source).

import { createHash, randomUUID } from 'node:crypto';
import { AtrestError, FormatInvalidError } from '../errors.js';
import { u16be, u32be } from '../bytes.js';
import {
  DEK_SOURCE_AES_GCM_KEY,
  DEK_SOURCE_HKDF_SHA256_XNONCE_AES_GCM_SEED,
  EncryptedObject,
} from '../proto/encrypted-object.js';
import { V2_API_VERSION, V2_HEALTHZ_OK, V2_STATUS_VERSIONS } from '../proto/kms-v2.js';
import {
  AES_KEY_SIZES,
  createAesGcmSeedTransformer,
  createAesGcmTransformer,
  defaultRandom,
  HKDF_MIN_SEED_SIZE,
} from './aes-gcm.js';
import type { RandomSource } from './aes-gcm.js';
import {
  KMS_HEALTHZ_NEGATIVE_TTL_MS,
  KMS_HEALTHZ_POSITIVE_TTL_MS,
  kmsCallFailed,
} from './kms-v1.js';
import type { KmsHealth } from './kms-v1.js';
import type { KmsV2Service } from './kms-services.js';
import {
  keyIDHash,
  validateAnnotations,
  validateEncryptedDEKSource,
  validateEncryptedObject,
  validateKeyID,
} from './kms-v2-validation.js';
import { PROVIDER_PREFIXES } from './prefix.js';
import type { PrefixEntry } from './prefix.js';
import type { FromStorageResult, TransformContext, Transformer } from './transformer.js';

export const KMS_V2_SEED_SIZE = 32;
/** Writes stay allowed this long after the last good Status (kmsv2PluginWriteDEKSourceMaxTTL). */
export const KMS_V2_WRITE_STATE_TTL_MS = 3 * 60_000;
/** Decrypted DEKs/seeds are reused this long (cacheTTL). */
export const KMS_V2_DECRYPT_CACHE_TTL_MS = 24 * 60 * 60_000;
export const KMS_V2_POLL_HEALTHY_MS = 60_000;
export const KMS_V2_POLL_UNHEALTHY_MS = 10_000;
/** Status versions kube-apiserver >= 1.29 accepts ("v2beta1" is what 1.27/1.28 require). */
export const KMS_V2_ACCEPTED_VERSIONS: readonly string[] = V2_STATUS_VERSIONS;

export interface KmsV2TransformerOptions {
  readonly name: string;
  readonly service: KmsV2Service;
  readonly now?: () => number;
  readonly random?: RandomSource;
  /** Request ids for Encrypt/Decrypt calls; UUIDv4 by default. */
  readonly uid?: () => string;
  /**
   * Read without a successful Status+Encrypt first. kube-apiserver refuses reads until then; offline tools
   * (disaster-recovery decrypt) may only be able to Decrypt. Writes always need a valid state.
   */
  readonly allowReadWithoutStatus?: boolean;
}

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

/**
 * The raw kms v2 transformer (it reads and writes what follows its prefix) that is also its own prefix
 * entry: `{ prefix: k8s:enc:kms:v2:<name>:, transformer: itself, description }`.
 */
export interface KmsV2Transformer extends Transformer, PrefixEntry {
  readonly prefix: Buffer;
  readonly description: string;
  /** Calls Status now, validates it and rotates the seed if the key_id changed (or there is no state). */
  refreshStatus(): Promise<KmsHealth>;
  /** refreshStatus with the upstream result cache: reused 20 s after success, 3 s after failure. */
  healthz(): Promise<KmsHealth>;
  /** Background Status polling: every healthyIntervalMs (60 s), every unhealthyIntervalMs (10 s) after a failure. */
  startPolling(options?: PollingOptions): PollingHandle;
  currentState(): KmsV2StateInfo | undefined;
  /** Number of decrypted DEKs/seeds in the read cache. */
  cachedSources(): number;
}

interface WriteState {
  readonly transformer: Transformer;
  readonly keyID: string;
  readonly encryptedDEKSource: Buffer;
  readonly annotations: Readonly<Record<string, Buffer>>;
  readonly sourceType: number;
  readonly uid: string;
  readonly expiresAt: number;
  readonly cacheKey: string;
}

interface CacheEntry {
  readonly transformer: Transformer;
  readonly expiresAt: number;
}

/**
 * The decrypt cache key, hashed with SHA-256 (all lengths big-endian):
 * u32(type) u16len(source) source u16len(keyID) keyID [u32(count) {u16len(k) k u16len(v) v} sorted by key]
 * The annotations part is present only when there are annotations.
 */
export function kmsV2CacheKey(
  sourceType: number,
  encryptedDEKSource: Uint8Array,
  keyID: string,
  annotations: Readonly<Record<string, Uint8Array>>,
): string {
  const keyIDBytes = Buffer.from(keyID, 'utf8');
  const parts: Uint8Array[] = [
    u32be(sourceType),
    u16be(encryptedDEKSource.length),
    encryptedDEKSource,
    u16be(keyIDBytes.length),
    keyIDBytes,
  ];
  const keys = Object.keys(annotations).sort(compareUtf8);
  if (keys.length > 0) {
    parts.push(u32be(keys.length));
    for (const k of keys) {
      const kb = Buffer.from(k, 'utf8');
      const v = annotations[k]!;
      parts.push(u16be(kb.length), kb, u16be(v.length), v);
    }
  }
  const hash = createHash('sha256');
  for (const p of parts) hash.update(p);
  return hash.digest('hex');
}

/** Go sorts strings by bytes; JS by UTF-16 code units. They differ outside the BMP, so compare bytes. */
function compareUtf8(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

function rfc3339(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
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

export function createKmsV2Transformer(options: KmsV2TransformerOptions): KmsV2Transformer {
  const { name, service } = options;
  if (typeof name !== 'string' || name.length === 0) throw new TypeError('kms v2 needs a name');
  const now = options.now ?? Date.now;
  const random = options.random ?? defaultRandom;
  const newUID = options.uid ?? (() => randomUUID());
  const description = `kms v2 "${name}"`;

  let state: WriteState | undefined;
  let acceptedVersion: string | undefined;
  let inflight: Promise<KmsHealth> | undefined;
  let lastHealth: KmsHealth | undefined;
  const cache = new Map<string, CacheEntry>();

  function cacheInsert(key: string, transformer: Transformer): void {
    const at = now();
    // Expired entries are dropped whenever something is inserted (as upstream's expiring cache does).
    for (const [k, e] of cache) if (e.expiresAt < at) cache.delete(k);
    cache.set(key, { transformer, expiresAt: at + KMS_V2_DECRYPT_CACHE_TTL_MS });
  }

  function cacheGet(key: string): Transformer | undefined {
    const e = cache.get(key);
    if (e === undefined) return undefined;
    if (e.expiresAt < now()) {
      cache.delete(key);
      return undefined;
    }
    return e.transformer;
  }

  function noState(): AtrestError {
    return new AtrestError(
      'ERR_KMS_STATE',
      `kms v2 provider "${name}" has no usable state yet (no successful Status and Encrypt): got unexpected nil transformer`,
    );
  }

  /** Status key_id is valid: keep the seed if the key_id is unchanged, else a new seed and one Encrypt. */
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
    let errGen: string | undefined;
    let encryptKeyID = '';
    try {
      const resp = await service.encrypt(seed, uid);
      encryptKeyID = resp.keyID;
      const problems: string[] = [];
      const src = validateEncryptedDEKSource(resp.ciphertext);
      if (src) problems.push(src);
      const kid = validateKeyID(resp.keyID);
      if (kid) problems.push(kid);
      problems.push(...validateAnnotations(resp.annotations));
      if (problems.length === 0 && resp.keyID !== statusKeyID) {
        problems.push('the key_id of Encrypt differs from the key_id of Status');
      }
      if (problems.length === 0) {
        const sourceType = DEK_SOURCE_HKDF_SHA256_XNONCE_AES_GCM_SEED;
        const annotations: Record<string, Buffer> = {};
        for (const [k, v] of Object.entries(resp.annotations)) annotations[k] = Buffer.from(v);
        const encryptedDEKSource = Buffer.from(resp.ciphertext);
        const cacheKey = kmsV2CacheKey(sourceType, encryptedDEKSource, resp.keyID, annotations);
        const transformer = createAesGcmSeedTransformer(seed, { random });
        state = {
          transformer,
          keyID: resp.keyID,
          encryptedDEKSource,
          annotations,
          sourceType,
          uid,
          expiresAt,
          cacheKey,
        };
        cacheInsert(cacheKey, transformer);
        return undefined;
      }
      errGen = problems.join('; ');
    } catch (cause) {
      errGen = `failed to encrypt DEK, error: ${cause instanceof Error ? cause.message : String(cause)}`;
    } finally {
      seed.fill(0);
    }
    const errState = current ? 'none' : 'got unexpected nil transformer';
    return (
      `failed to rotate DEK uid=${JSON.stringify(uid)}, useSeed=true, errState=${errState}, ` +
      `errGen=${errGen}, statusKeyIDHash=${JSON.stringify(keyIDHash(statusKeyID))}, ` +
      `encryptKeyIDHash=${JSON.stringify(keyIDHash(encryptKeyID))}, ` +
      `stateKeyIDHash=${JSON.stringify(keyIDHash(current?.keyID ?? ''))}, ` +
      `expirationTimestamp=${rfc3339(current?.expiresAt ?? 0)}`
    );
  }

  async function checkStatus(): Promise<KmsHealth> {
    const checkedAt = now();
    const errors: AtrestError[] = [];
    try {
      const status = await service.status();
      if (status.healthz !== V2_HEALTHZ_OK) {
        errors.push(
          new AtrestError('ERR_UNHEALTHY', `got unexpected healthz status: ${status.healthz}`),
        );
      }
      if (!KMS_V2_ACCEPTED_VERSIONS.includes(status.version)) {
        errors.push(
          new AtrestError(
            'ERR_KMS_VERSION',
            `expected KMSv2 API version ${V2_API_VERSION}, got ${status.version}`,
          ),
        );
      } else if (acceptedVersion === undefined) {
        acceptedVersion = status.version;
      } else if (acceptedVersion !== status.version) {
        errors.push(
          new AtrestError(
            'ERR_KMS_VERSION',
            `KMSv2 API version should not change after the initial status response version ${acceptedVersion}, got ${status.version}`,
          ),
        );
      }
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
        const rotation = await rotateOnKeyIDChange(status.keyID, newUID());
        if (rotation) errors.push(new AtrestError('ERR_KMS_STATE', rotation));
      }
    } catch (cause) {
      errors.push(kmsCallFailed('failed to get kmsv2 plugin status', cause));
    }
    if (errors.length === 0) return { ok: true, checkedAt };
    const text =
      errors.length === 1 ? errors[0]!.message : `[${errors.map((e) => e.message).join(', ')}]`;
    return {
      ok: false,
      checkedAt,
      error: new AtrestError(
        errors[0]!.code,
        `kmsv2 Provider ${name} is not healthy, error: ${text}`,
        {
          cause: errors.length === 1 ? errors[0] : errors,
        },
      ),
    };
  }

  function refreshStatus(): Promise<KmsHealth> {
    if (inflight === undefined) {
      inflight = checkStatus().then(
        (h) => {
          inflight = undefined;
          lastHealth = h;
          return h;
        },
        (cause: unknown) => {
          inflight = undefined;
          const h: KmsHealth = {
            ok: false,
            checkedAt: now(),
            error: kmsCallFailed('kmsv2 Provider status check failed', cause),
          };
          lastHealth = h;
          return h;
        },
      );
    }
    return inflight;
  }

  /** Concurrent reads of values sharing an uncached seed make one Decrypt call, not one each. */
  const pendingDecrypts = new Map<string, Promise<Transformer>>();

  function readTransformerFor(obj: DecodedEncryptedObject): Promise<Transformer> {
    const key = kmsV2CacheKey(
      obj.encryptedDEKSourceType,
      obj.encryptedDEKSource,
      obj.keyID,
      obj.annotations,
    );
    const hit = cacheGet(key);
    if (hit) return Promise.resolve(hit);
    let pending = pendingDecrypts.get(key);
    if (pending === undefined) {
      pending = decryptSource(obj, key).finally(() => pendingDecrypts.delete(key));
      pendingDecrypts.set(key, pending);
    }
    return pending;
  }

  async function decryptSource(obj: DecodedEncryptedObject, key: string): Promise<Transformer> {
    let plain: Buffer;
    try {
      plain = await service.decrypt({
        ciphertext: obj.encryptedDEKSource,
        uid: newUID(),
        keyID: obj.keyID,
        annotations: obj.annotations,
      });
    } catch (cause) {
      throw kmsCallFailed('failed to decrypt DEK', cause);
    }
    let transformer: Transformer;
    if (obj.encryptedDEKSourceType === DEK_SOURCE_AES_GCM_KEY) {
      if (!AES_KEY_SIZES.includes(plain.length)) {
        throw new AtrestError(
          'ERR_KMS_RESPONSE_INVALID',
          `the KMS plugin returned a DEK of ${plain.length} bytes; an AES key has 16, 24 or 32`,
        );
      }
      transformer = createAesGcmTransformer(plain, { random });
    } else {
      if (plain.length < HKDF_MIN_SEED_SIZE) {
        throw new AtrestError(
          'ERR_KMS_RESPONSE_INVALID',
          `the KMS plugin returned a seed of ${plain.length} bytes; at least ${HKDF_MIN_SEED_SIZE} are required`,
        );
      }
      transformer = createAesGcmSeedTransformer(plain, { random });
    }
    plain.fill(0);
    cacheInsert(key, transformer);
    return transformer;
  }

  const self: KmsV2Transformer = {
    prefix: Buffer.from(`${PROVIDER_PREFIXES.kmsV2}${name}:`, 'utf8'),
    description,
    get transformer(): Transformer {
      return self;
    },

    async transformToStorage(data: Uint8Array, context: TransformContext): Promise<Buffer> {
      const current = state;
      if (current === undefined) throw noState();
      const at = now();
      if (at > current.expiresAt) {
        throw new AtrestError(
          'ERR_KMS_STATE',
          `encryptedDEKSource with keyID hash ${JSON.stringify(keyIDHash(current.keyID))} expired at ` +
            `${rfc3339(current.expiresAt)} (current time is ${rfc3339(at)})`,
        );
      }
      const encryptedData = await current.transformer.transformToStorage(data, context);
      const out = EncryptedObject.encode({
        encryptedData,
        keyID: current.keyID,
        encryptedDEKSource: current.encryptedDEKSource,
        annotations: current.annotations,
        encryptedDEKSourceType: current.sourceType,
      });
      // Keeps the current seed warm in the read cache, as upstream does on every write.
      cacheInsert(current.cacheKey, current.transformer);
      return out;
    },

    async transformFromStorage(
      data: Uint8Array,
      context: TransformContext,
    ): Promise<FromStorageResult> {
      const obj = decodeEncryptedObject(data);
      const current = state;
      if (current === undefined && !options.allowReadWithoutStatus) throw noState();
      const transformer = await readTransformerFor(obj);
      const result = await transformer.transformFromStorage(obj.encryptedData, context);
      // Without a state (offline reads) only the source type can be judged.
      const stale =
        current === undefined
          ? obj.encryptedDEKSourceType !== DEK_SOURCE_HKDF_SHA256_XNONCE_AES_GCM_SEED
          : obj.keyID !== current.keyID || obj.encryptedDEKSourceType !== current.sourceType;
      return { data: result.data, stale };
    },

    refreshStatus,

    async healthz(): Promise<KmsHealth> {
      const h = lastHealth;
      if (h) {
        const ttl = h.ok ? KMS_HEALTHZ_POSITIVE_TTL_MS : KMS_HEALTHZ_NEGATIVE_TTL_MS;
        if (now() - h.checkedAt < ttl) return h;
      }
      return refreshStatus();
    },

    startPolling(pollOptions: PollingOptions = {}): PollingHandle {
      const timers = pollOptions.timers ?? defaultTimers;
      const healthyMs = pollOptions.healthyIntervalMs ?? KMS_V2_POLL_HEALTHY_MS;
      const unhealthyMs = pollOptions.unhealthyIntervalMs ?? KMS_V2_POLL_UNHEALTHY_MS;
      let stopped = false;
      let handle: unknown;
      const schedule = (ms: number): void => {
        if (!stopped) handle = timers.setTimeout(() => void run(), ms);
      };
      const run = async (): Promise<void> => {
        handle = undefined;
        if (stopped) return;
        const h = await refreshStatus();
        pollOptions.onResult?.(h);
        schedule(h.ok ? healthyMs : unhealthyMs);
      };
      if (pollOptions.immediate ?? true) void run();
      else schedule(healthyMs);
      return {
        stop() {
          stopped = true;
          if (handle !== undefined) timers.clearTimeout(handle);
          handle = undefined;
        },
      };
    },

    currentState(): KmsV2StateInfo | undefined {
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

    cachedSources(): number {
      return cache.size;
    },
  };
  return self;
}

export interface DecodedEncryptedObject {
  readonly encryptedData: Buffer;
  readonly keyID: string;
  readonly encryptedDEKSource: Buffer;
  readonly annotations: Readonly<Record<string, Buffer>>;
  readonly encryptedDEKSourceType: number;
}

/** Decodes and validates a stored EncryptedObject (what follows the kms v2 prefix). */
export function decodeEncryptedObject(data: Uint8Array): DecodedEncryptedObject {
  const obj = EncryptedObject.decode(data);
  const problems = validateEncryptedObject(obj);
  if (problems.length > 0) {
    throw new FormatInvalidError(
      'ERR_FORMAT_MALFORMED',
      `invalid EncryptedObject: ${problems.join('; ')}`,
    );
  }
  return obj;
}
