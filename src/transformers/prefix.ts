// Prefix routing, as kube-apiserver's "prefix transformers": the first entry writes, reads try every
// entry whose prefix matches. Also the two-level per-key providers (aescbc, aesgcm, secretbox) built on it.

import { AtrestError, FormatInvalidError } from '../errors.js';
import { startsWithBytes } from '../bytes.js';
import { createAesCbcTransformer } from './aes-cbc.js';
import { createAesGcmTransformer } from './aes-gcm.js';
import type { RandomOptions } from './aes-gcm.js';
import { createIdentityTransformer } from './identity.js';
import { createSecretboxTransformer } from './secretbox.js';
import type { FromStorageResult, TransformContext, Transformer } from './transformer.js';

/** The prefixes written before each format's bytes (ASCII). Changing these makes stored data unreadable. */
export const PROVIDER_PREFIXES = {
  aescbc: 'k8s:enc:aescbc:v1:',
  aesgcm: 'k8s:enc:aesgcm:v1:',
  secretbox: 'k8s:enc:secretbox:v1:',
  kmsV1: 'k8s:enc:kms:v1:',
  kmsV2: 'k8s:enc:kms:v2:',
} as const;

export type KeyedProviderName = 'aescbc' | 'aesgcm' | 'secretbox';

/** One element of a prefix list. `description` names it in errors (e.g. `aescbc key "key1"`). */
export interface PrefixEntry {
  readonly prefix: Uint8Array;
  readonly transformer: Transformer;
  readonly description?: string;
}

export interface TransformAttempt {
  readonly description: string;
  readonly error: unknown;
}

/**
 * Every provider whose prefix matched failed to read the value. `attempts` lists them in configuration
 * order (nested per-key lists are flattened), so a caller can name the providers tried. The code is the
 * first attempt's code (the primary provider's reason). Messages carry descriptions and reasons only.
 */
export class ProvidersFailedError extends AtrestError {
  readonly attempts: readonly TransformAttempt[];

  constructor(attempts: readonly TransformAttempt[]) {
    const first = attempts[0]?.error;
    const code = first instanceof AtrestError ? first.code : 'ERR_DECRYPTION_FAILED';
    const parts = attempts.map((a) => `${a.description}: ${messageOf(a.error)}`);
    super(code, parts.length === 1 ? parts[0]! : `[${parts.join(', ')}]`, {
      cause: attempts.length === 1 ? first : undefined,
    });
    this.attempts = attempts;
  }
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Without a description an entry is named by its (ASCII) prefix, which carries no secret. */
function defaultDescription(prefix: Uint8Array, index: number): string {
  if (prefix.length === 0) return 'identity';
  const text = Buffer.from(prefix)
    .toString('latin1')
    .replace(/[^\x20-\x7e]/g, '?');
  return `provider ${index} (${JSON.stringify(text)})`;
}

function noMatchingPrefix(): FormatInvalidError {
  return new FormatInvalidError('ERR_FORMAT_NO_MATCHING_PROVIDER', 'no matching prefix found');
}

/**
 * Routes by prefix. Write: the first entry, its prefix then its output. Read: each entry whose prefix
 * matches, in order; an empty-prefix (identity) failure is skipped silently, other failures are remembered
 * and the next entry is tried; the first success wins and is stale unless it came from entry 0 (or the inner
 * transformer said stale). Nothing succeeded: the remembered failures, else `noMatchError`.
 */
export function createPrefixTransformers(
  entries: readonly PrefixEntry[],
  noMatchError: Error | (() => Error) = noMatchingPrefix,
): Transformer {
  if (entries.length === 0)
    throw new TypeError('createPrefixTransformers needs at least one entry');
  const list = entries.map((e, i) => ({
    prefix: Buffer.from(e.prefix),
    transformer: e.transformer,
    description: e.description ?? defaultDescription(e.prefix, i),
  }));
  const first = list[0]!;
  return {
    async transformToStorage(data: Uint8Array, context: TransformContext): Promise<Buffer> {
      const out = await first.transformer.transformToStorage(data, context);
      return first.prefix.length === 0 ? out : Buffer.concat([first.prefix, out]);
    },

    async transformFromStorage(
      data: Uint8Array,
      context: TransformContext,
    ): Promise<FromStorageResult> {
      const attempts: TransformAttempt[] = [];
      for (let i = 0; i < list.length; i++) {
        const entry = list[i]!;
        if (!startsWithBytes(data, entry.prefix)) continue;
        let result: FromStorageResult;
        try {
          result = await entry.transformer.transformFromStorage(
            data.subarray(entry.prefix.length),
            context,
          );
        } catch (error) {
          // Identity refuses encrypted data; with identity listed first, that must not hide the value
          // from the providers after it.
          if (entry.prefix.length === 0) continue;
          if (error instanceof ProvidersFailedError) attempts.push(...error.attempts);
          else attempts.push({ description: entry.description, error });
          continue;
        }
        return { data: result.data, stale: result.stale || i !== 0 };
      }
      if (attempts.length > 0) throw new ProvidersFailedError(attempts);
      throw typeof noMatchError === 'function' ? noMatchError() : noMatchError;
    },
  };
}

export interface KeyedProviderKey {
  readonly name: string;
  readonly secret: Uint8Array;
}

export interface KeyedProviderOptions extends RandomOptions {
  /** How the provider is named in errors; defaults to the provider name. */
  readonly description?: string;
}

const RAW_TRANSFORMERS: Record<
  KeyedProviderName,
  (key: Uint8Array, options: RandomOptions) => Transformer
> = {
  aescbc: createAesCbcTransformer,
  aesgcm: createAesGcmTransformer,
  secretbox: createSecretboxTransformer,
};

const NO_MATCHING_KEY: Record<KeyedProviderName, string> = {
  aescbc: 'no matching key was found for the provided AES transformer',
  aesgcm: 'no matching key was found for the provided AES transformer',
  secretbox: 'no matching key was found for the provided Secretbox transformer',
};

/**
 * A per-key provider: outer prefix `k8s:enc:<provider>:v1:`, then one inner entry `<keyName>:` per key.
 * The first key writes; reading with another key is stale.
 */
export function createKeyedProvider(
  provider: KeyedProviderName,
  keys: readonly KeyedProviderKey[],
  options: KeyedProviderOptions = {},
): PrefixEntry {
  const create = RAW_TRANSFORMERS[provider];
  if (create === undefined) throw new TypeError(`unknown keyed provider ${String(provider)}`);
  if (keys.length === 0) throw new TypeError(`${provider} needs at least one key`);
  const description = options.description ?? provider;
  const random = options.random;
  const inner = createPrefixTransformers(
    keys.map((k) => ({
      prefix: Buffer.from(`${k.name}:`, 'utf8'),
      transformer: create(k.secret, random ? { random } : {}),
      description: `${description} key "${k.name}"`,
    })),
    () => new FormatInvalidError('ERR_FORMAT_NO_MATCHING_PROVIDER', NO_MATCHING_KEY[provider]),
  );
  return {
    prefix: Buffer.from(PROVIDER_PREFIXES[provider], 'latin1'),
    transformer: inner,
    description,
  };
}

/** The identity entry of a prefix list: empty prefix, refuses encrypted data on read. */
export function createIdentityProvider(description = 'identity'): PrefixEntry {
  return { prefix: Buffer.alloc(0), transformer: createIdentityTransformer(), description };
}
