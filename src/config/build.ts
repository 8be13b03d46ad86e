// buildTransformers: a validated EncryptionConfiguration -> the transformers kube-apiserver would build
// from it (one prefix list per rule, shared provider instances, kms providers dialled through injected
// functions). No I/O of its own: the CLI passes the real KMS clients in `deps`.

import type { KmsV1Service, KmsV2Service } from '../transformers/kms-services.js';
import {
  createIdentityProvider,
  createKeyedProvider,
  createPrefixTransformers,
  PROVIDER_PREFIXES,
} from '../transformers/prefix.js';
import type { PrefixEntry } from '../transformers/prefix.js';
import { createIdentityTransformer } from '../transformers/identity.js';
import { createKmsV1Transformer } from '../transformers/kms-v1.js';
import type { KmsV1Transformer } from '../transformers/kms-v1.js';
import { createKmsV2Transformer } from '../transformers/kms-v2.js';
import type { KmsV2Transformer, KmsV2TransformerOptions } from '../transformers/kms-v2.js';
import { describeStoredValue } from '../transformers/describe.js';
import type { Transformer } from '../transformers/transformer.js';
import { formatGroupResource, indexRules, parseGroupResource } from './resolve.js';
import type { GroupResource } from './resolve.js';
import type { EncryptionConfiguration, Key, KMSConfiguration, ProviderConfiguration } from './types.js';
import { providerType } from './types.js';
import { decodeStdBase64 } from './validate.js';

/** A KMS client as the CLI hands it over; `close` (if any) is called by BuiltTransformers.close(). */
export type Closable<T> = T & { close?(): void | Promise<void> };

export interface BuildDeps {
  dialKmsV1?(endpoint: string, timeoutMs: number): Closable<KmsV1Service>;
  dialKmsV2?(endpoint: string, timeoutMs: number): Closable<KmsV2Service>;
  /** Extra options for every kms v2 transformer (clock, randomness, offline reads). */
  readonly kmsV2Options?: Omit<KmsV2TransformerOptions, 'name' | 'service'>;
}

/** What writes new values for a resource, so a tool can tell whether a stored value is current. */
export interface WriteProvider {
  /** `identity`, `aescbc/key1`, `aesgcm/key1`, `secretbox/key1`, `kms-v1/name`, `kms-v2/name` */
  readonly label: string;
  readonly type: 'identity' | 'aescbc' | 'aesgcm' | 'secretbox' | 'kms-v1' | 'kms-v2';
  /** The key name (aescbc/aesgcm/secretbox) or the kms provider name. */
  readonly name?: string;
  /** The exact bytes every value it writes starts with (empty for identity). */
  readonly prefix: Buffer;
  /** kms v2: the plugin key id of the current write state, known after a successful Status. */
  keyID(): string | undefined;
  /**
   * Was `stored` written by this provider with its current key? For kms v2 this also compares the
   * stored key_id with the current one (false while no Status has succeeded). Never decrypts.
   */
  wrote(stored: Uint8Array): boolean;
}

export interface KmsProviderHandle {
  /** 0-based over all kms providers in file order: the health check is `kms-provider-<index>`. */
  readonly index: number;
  /** Path in the file, e.g. `resources[0].providers[1].kms`. */
  readonly path: string;
  readonly config: KMSConfiguration;
  readonly transformer: KmsV1Transformer | KmsV2Transformer;
}

export interface BuiltTransformers {
  /** The transformer kube-apiserver would use for this resource (identity-that-refuses if unmatched). */
  transformerFor(gr: GroupResource): Transformer;
  /** The provider that writes for this resource. */
  writeProviderFor(gr: GroupResource): WriteProvider;
  /** The matching rule (`secrets`, `*.apps`, `*.*`), or null when none matches. */
  ruleFor(gr: GroupResource): string | null;
  readonly kmsProviders: readonly KmsProviderHandle[];
  /** Closes every KMS client that was dialled. */
  close(): Promise<void>;
}

interface BuiltProvider {
  readonly entry: PrefixEntry;
  readonly writer: WriteProvider;
}

const ENCRYPTED = Buffer.from('k8s:enc:', 'latin1');

function startsWith(data: Uint8Array, prefix: Uint8Array): boolean {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength).subarray(0, prefix.length).equals(prefix);
}

function decodeKeys(keys: readonly Key[]): { name: string; secret: Buffer }[] {
  return keys.map((k) => {
    const secret = decodeStdBase64(k.secret);
    if (secret === undefined) throw new TypeError('buildTransformers needs a validated configuration');
    return { name: k.name, secret };
  });
}

/**
 * Builds every transformer of `config` (which must come from parseEncryptionConfiguration). kms
 * providers need the matching dial function in `deps`; a missing one is a TypeError.
 */
export function buildTransformers(config: EncryptionConfiguration, deps: BuildDeps = {}): BuiltTransformers {
  const closers: (() => void | Promise<void>)[] = [];
  const kmsProviders: KmsProviderHandle[] = [];
  const built = new Map<ProviderConfiguration, BuiltProvider>();

  config.resources.forEach((entry, i) => {
    entry.providers.forEach((provider, j) => {
      const path = `resources[${i}].providers[${j}]`;
      built.set(provider, buildProvider(provider, path));
    });
  });

  function buildProvider(provider: ProviderConfiguration, path: string): BuiltProvider {
    if ('identity' in provider) {
      return { entry: createIdentityProvider(`identity (${path})`), writer: identityWriter() };
    }
    if ('aescbc' in provider || 'aesgcm' in provider || 'secretbox' in provider) {
      const type = providerType(provider) as 'aescbc' | 'aesgcm' | 'secretbox';
      const keys = decodeKeys(
        'aescbc' in provider ? provider.aescbc.keys : 'aesgcm' in provider ? provider.aesgcm.keys : provider.secretbox.keys,
      );
      const entry = createKeyedProvider(type, keys, { description: `${type} (${path})` });
      for (const k of keys) k.secret.fill(0);
      const first = keys[0]!.name;
      const prefix = Buffer.from(`${PROVIDER_PREFIXES[type]}${first}:`, 'utf8');
      return {
        entry,
        writer: {
          label: `${type}/${first}`,
          type,
          name: first,
          prefix,
          keyID: () => undefined,
          wrote: (stored) => startsWith(stored, prefix),
        },
      };
    }
    const kms = provider.kms;
    const index = kmsProviders.length;
    if (kms.apiVersion === 'v1') {
      if (deps.dialKmsV1 === undefined) throw new TypeError(`${path}.kms: kms v1 needs deps.dialKmsV1`);
      const service = deps.dialKmsV1(kms.endpoint, kms.timeout);
      if (service.close) closers.push(() => service.close?.());
      const t = createKmsV1Transformer({ name: kms.name, service, cacheSize: kms.cachesize ?? 1000 });
      kmsProviders.push({ index, path: `${path}.kms`, config: kms, transformer: t });
      return {
        entry: { prefix: t.prefix, transformer: t, description: `${t.description} (${path})` },
        writer: {
          label: `kms-v1/${kms.name}`,
          type: 'kms-v1',
          name: kms.name,
          prefix: t.prefix,
          keyID: () => undefined,
          wrote: (stored) => startsWith(stored, t.prefix),
        },
      };
    }
    if (deps.dialKmsV2 === undefined) throw new TypeError(`${path}.kms: kms v2 needs deps.dialKmsV2`);
    const service = deps.dialKmsV2(kms.endpoint, kms.timeout);
    if (service.close) closers.push(() => service.close?.());
    const t = createKmsV2Transformer({ ...deps.kmsV2Options, name: kms.name, service });
    kmsProviders.push({ index, path: `${path}.kms`, config: kms, transformer: t });
    const keyID = (): string | undefined => t.currentState()?.keyID;
    return {
      entry: { prefix: t.prefix, transformer: t, description: `${t.description} (${path})` },
      writer: {
        label: `kms-v2/${kms.name}`,
        type: 'kms-v2',
        name: kms.name,
        prefix: t.prefix,
        keyID,
        wrote: (stored) => {
          if (!startsWith(stored, t.prefix)) return false;
          const current = keyID();
          return current !== undefined && describeStoredValue(stored).keyID === current;
        },
      },
    };
  }

  const rules = new Map<string, { rule: string; transformer: Transformer; writer: WriteProvider }>();
  for (const [k, { rule, providers }] of indexRules(config)) {
    const list = providers.map((p) => built.get(p)!);
    rules.set(k, {
      rule,
      transformer: createPrefixTransformers(list.map((b) => b.entry)),
      writer: list[0]!.writer,
    });
  }
  const fallback = { rule: null, transformer: createIdentityTransformer(), writer: identityWriter() };

  function lookup(gr: GroupResource): { rule: string | null; transformer: Transformer; writer: WriteProvider } {
    for (const c of [gr, { group: gr.group, resource: '*' }, { group: '*', resource: '*' }]) {
      const hit = rules.get(`${c.group}\u0000${c.resource}`);
      if (hit) return hit;
    }
    return fallback;
  }

  return {
    transformerFor: (gr) => lookup(gr).transformer,
    writeProviderFor: (gr) => lookup(gr).writer,
    ruleFor: (gr) => lookup(gr).rule,
    kmsProviders,
    async close() {
      const pending = closers.splice(0);
      await Promise.allSettled(pending.map((c) => c()));
    },
  };
}

function identityWriter(): WriteProvider {
  return {
    label: 'identity',
    type: 'identity',
    prefix: Buffer.alloc(0),
    keyID: () => undefined,
    wrote: (stored) => !startsWith(stored, ENCRYPTED),
  };
}

/** Convenience for callers holding a resource string from a config file (`secrets`, `*.apps`). */
export function groupResourceOf(text: string): GroupResource {
  return parseGroupResource(text);
}

export { formatGroupResource };
