// The decrypt engine: reads stored values (live etcd, a snapshot, or bytes someone extracted),
// decrypts them with the configured providers and decodes the Kubernetes object. A value that does
// not decrypt is reported with its etcd key and the providers tried; it never yields plaintext.

import { describeStoredValue } from '../transformers/describe.js';
import type { KeyValue } from './client.js';
import { decodeStoredObject, type StorageEncoding } from './k8s-object.js';
import { formatLabel, type PolicyResolver } from './policy.js';
import { providersTried } from './scan.js';
import type { Selection } from './selection.js';
import type { KeyValueSource } from './source.js';

export interface DecryptedValue {
  readonly ok: true;
  readonly key: string;
  readonly resource: string;
  readonly stored: string;
  readonly stale: boolean;
  readonly modRevision: number;
  readonly encoding: StorageEncoding;
  readonly object: Record<string, unknown>;
  /** The decrypted bytes (for `-o raw`); never logged. */
  readonly plaintext: Buffer;
}

export interface UndecryptedValue {
  readonly ok: false;
  readonly key: string;
  readonly resource: string;
  readonly stored: string;
  readonly providersTried: readonly string[];
  readonly reason: string;
}

export type DecryptResult = DecryptedValue | UndecryptedValue;

export interface DecryptOptions {
  readonly policies: PolicyResolver;
  readonly showSecretData?: boolean;
}

export async function decryptValue(kv: KeyValue, options: DecryptOptions): Promise<DecryptResult> {
  const policy = options.policies.forKey(kv.key);
  const key = kv.key.toString('utf8');
  const stored = formatLabel(describeStoredValue(kv.value));
  let read;
  try {
    read = await policy.transformer.transformFromStorage(kv.value, { authenticatedData: kv.key });
  } catch (err) {
    return {
      ok: false,
      key,
      resource: policy.resource,
      stored,
      providersTried: providersTried(err, policy),
      reason: err instanceof Error ? err.message : String(err),
    };
  }
  let decoded;
  try {
    decoded = decodeStoredObject(read.data, { showSecretData: options.showSecretData === true });
  } catch (err) {
    decoded = {
      encoding: 'unknown' as const,
      object: { decodeError: err instanceof Error ? err.message : String(err), rawSize: read.data.length },
    };
  }
  return {
    ok: true,
    key,
    resource: policy.resource,
    stored,
    stale: read.stale,
    modRevision: kv.modRevision,
    encoding: decoded.encoding,
    object: decoded.object,
    plaintext: read.data,
  };
}

/** Every selected key of a source, decrypted one page at a time. */
export async function* decryptAll(
  source: KeyValueSource,
  selection: Selection,
  options: DecryptOptions,
): AsyncGenerator<DecryptResult> {
  for (const range of selection.ranges) {
    for await (const page of source.pages(range.start, range.end, { pageSize: 200 })) {
      for (const kv of page) {
        if (!selection.includes(options.policies.forKey(kv.key))) continue;
        yield await decryptValue(kv, options);
      }
    }
  }
}
