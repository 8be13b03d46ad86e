// What the encryption configuration says about one etcd key: its resource, the transformer that
// reads and writes it, the provider/key that writes (the "current" one), which providers could read
// it, and whether it must be encrypted. Also classifies a stored value against that, without
// decrypting (format, key name, kms name, key_id from describeStoredValue).

import type { EncryptionConfiguration, ProviderConfiguration } from '../config/types.js';
import { providerType } from '../config/types.js';
import {
  formatGroupResource,
  groupResourceForEtcdKey,
  indexRules,
  normalizeEtcdPrefix,
  parseGroupResource,
  resolveResource,
  type GroupResource,
} from '../config/resolve.js';
import { describeStoredValue, type StoredFormat, type StoredValueInfo } from '../transformers/describe.js';
import type { Transformer } from '../transformers/transformer.js';

/** The provider and key every rewrite writes with (the first provider, its first key). */
export interface WriteTarget {
  readonly format: StoredFormat;
  readonly keyName?: string;
  readonly kmsName?: string;
  /** kms v2: the plugin's current key_id (from Status), when known. */
  readonly keyID?: string;
}

export interface ResourcePolicy {
  /** `secrets`, `deployments.apps`; for keys atrest cannot place: `?/<first path segment>`. */
  readonly resource: string;
  readonly groupResource: GroupResource | undefined;
  /** The config rule that matched, or null (identity that refuses encrypted data). */
  readonly rule: string | null;
  /** The first provider is not identity: plaintext here is a finding. */
  readonly mustEncrypt: boolean;
  readonly transformer: Transformer;
  readonly write: WriteTarget;
  /** Every provider in read order, described as `aescbc[key1,key2]`, `kms-v2/name`, `identity`. */
  readonly providers: readonly string[];
  /** Could any configured provider read a value of this shape (prefix, key name, kms name)? */
  canRead(info: StoredValueInfo): boolean;
}

export interface PolicyDeps {
  /** The transformer kube-apiserver would use for this resource (prefix list of its providers). */
  readonly transformerFor: (gr: GroupResource, providers: readonly ProviderConfiguration[]) => Transformer;
  /** kms v2 provider name -> the plugin's current key_id, when known (Status succeeded). */
  readonly kmsV2KeyID?: (kmsName: string) => string | undefined;
}

export function writeTargetOf(
  providers: readonly ProviderConfiguration[],
  kmsV2KeyID?: (name: string) => string | undefined,
): WriteTarget {
  const first = providers[0];
  if (first === undefined || 'identity' in first) return { format: 'identity' };
  if ('aescbc' in first) return { format: 'aescbc', keyName: first.aescbc.keys[0]!.name };
  if ('aesgcm' in first) return { format: 'aesgcm', keyName: first.aesgcm.keys[0]!.name };
  if ('secretbox' in first) return { format: 'secretbox', keyName: first.secretbox.keys[0]!.name };
  const kms = first.kms;
  if (kms.apiVersion === 'v1') return { format: 'kms-v1', kmsName: kms.name };
  const keyID = kmsV2KeyID?.(kms.name);
  return { format: 'kms-v2', kmsName: kms.name, ...(keyID !== undefined ? { keyID } : {}) };
}

function keyNamesOf(p: ProviderConfiguration): string[] {
  if ('aescbc' in p) return p.aescbc.keys.map((k) => k.name);
  if ('aesgcm' in p) return p.aesgcm.keys.map((k) => k.name);
  if ('secretbox' in p) return p.secretbox.keys.map((k) => k.name);
  return [];
}

export function describeProvider(p: ProviderConfiguration): string {
  if ('identity' in p) return 'identity';
  if ('kms' in p) return `kms-${p.kms.apiVersion}/${p.kms.name}`;
  return `${providerType(p)}[${keyNamesOf(p).join(',')}]`;
}

/** A short label for a stored value: `plaintext`, `aescbc/key1`, `kms-v2/plugin key_id=k1`. */
export function formatLabel(info: StoredValueInfo): string {
  switch (info.format) {
    case 'identity':
      return 'plaintext';
    case 'aescbc':
    case 'aesgcm':
    case 'secretbox':
      return `${info.format}/${info.keyName ?? '?'}`;
    case 'kms-v1':
      return `kms-v1/${info.kmsName ?? '?'}`;
    case 'kms-v2':
      return `kms-v2/${info.kmsName ?? '?'}${info.keyID ? ` key_id=${info.keyID}` : ''}`;
    default:
      return 'unknown-encrypted';
  }
}

export function writeTargetLabel(w: WriteTarget): string {
  switch (w.format) {
    case 'identity':
      return 'identity (plaintext)';
    case 'kms-v1':
      return `kms-v1/${w.kmsName}`;
    case 'kms-v2':
      return `kms-v2/${w.kmsName}${w.keyID ? ` key_id=${w.keyID}` : ''}`;
    default:
      return `${w.format}/${w.keyName}`;
  }
}

/**
 * Is this value what the write target would write now? `undefined` when it cannot be told without
 * the plugin (kms v2 with an unknown current key_id).
 */
export function isCurrent(info: StoredValueInfo, w: WriteTarget): boolean | undefined {
  if (info.format !== w.format) return false;
  switch (w.format) {
    case 'identity':
      return true;
    case 'kms-v1':
      return info.kmsName === w.kmsName;
    case 'kms-v2':
      if (info.kmsName !== w.kmsName) return false;
      if (w.keyID === undefined) return undefined;
      // Kubernetes >= 1.29 only writes seed-mode objects; an AES_GCM_KEY object is stale too.
      return info.keyID === w.keyID && info.dekSourceType === 1;
    default:
      return info.keyName === w.keyName;
  }
}

function readerOf(providers: readonly ProviderConfiguration[]): (info: StoredValueInfo) => boolean {
  return (info) => {
    if (info.format === 'unknown-encrypted') return false;
    return providers.some((p) => {
      if (info.format === 'identity') return 'identity' in p;
      if ('kms' in p) {
        return (
          info.kmsName === p.kms.name &&
          ((info.format === 'kms-v1' && p.kms.apiVersion === 'v1') ||
            (info.format === 'kms-v2' && p.kms.apiVersion === 'v2'))
        );
      }
      if (providerType(p) !== info.format) return false;
      return keyNamesOf(p).includes(info.keyName ?? '');
    });
  };
}

/**
 * The group/resource of an etcd key: the known storage paths first; for an unknown path whose first
 * segment is named (without a group) by exactly one config rule, that rule's resource; else undefined.
 */
export function groupResourceOf(
  key: string,
  etcdPrefix: string,
  config: EncryptionConfiguration | readonly GroupResource[],
): GroupResource | undefined {
  const known = groupResourceForEtcdKey(key, etcdPrefix);
  if (known) return known;
  const p = normalizeEtcdPrefix(etcdPrefix);
  if (!key.startsWith(p)) return undefined;
  const first = key.slice(p.length).split('/')[0] ?? '';
  if (first === '' || first.includes('.')) return undefined;
  const rules = Array.isArray(config) ? config : configuredResources(config as EncryptionConfiguration);
  const named = rules.filter((gr) => gr.resource === first && gr.group !== '*');
  return named.length === 1 ? named[0] : undefined;
}

/** Every group/resource a rule of the configuration names (wildcards included). */
export function configuredResources(config: EncryptionConfiguration): GroupResource[] {
  return [...indexRules(config).values()].map((v) => parseGroupResource(v.rule));
}

export interface PolicyResolver {
  forKey(key: Buffer): ResourcePolicy;
}

export function createPolicyResolver(
  config: EncryptionConfiguration,
  etcdPrefix: string,
  deps: PolicyDeps,
): PolicyResolver {
  const byResource = new Map<string, ResourcePolicy>();
  const prefix = normalizeEtcdPrefix(etcdPrefix);
  const rules = configuredResources(config);
  const prefixBytes = Buffer.from(prefix, 'utf8');
  // Keys come in key order, so a run of keys shares one directory (`/registry/secrets/ns/`). The
  // policy of a key under the prefix with at least two segments before its (non-empty) last one
  // depends only on its directory (see groupResourceForEtcdKey): remember the last such directory.
  let lastDirectory: Buffer | undefined;
  let lastPolicy: ResourcePolicy | undefined;
  const directoryOf = (key: Buffer): number => {
    const slash = key.lastIndexOf(0x2f);
    if (slash === key.length - 1 || slash < prefixBytes.length) return -1;
    if (key.compare(prefixBytes, 0, prefixBytes.length, 0, prefixBytes.length) !== 0) return -1;
    const first = key.indexOf(0x2f, prefixBytes.length);
    return first >= 0 && first < slash ? slash + 1 : -1;
  };
  return {
    forKey(key: Buffer): ResourcePolicy {
      const dir = directoryOf(key);
      if (
        dir > 0 &&
        lastDirectory !== undefined &&
        lastDirectory.length === dir &&
        key.compare(lastDirectory, 0, dir, 0, dir) === 0
      ) {
        return lastPolicy!;
      }
      const policy = resolve(key);
      if (dir > 0) {
        lastDirectory = Buffer.from(key.subarray(0, dir));
        lastPolicy = policy;
      }
      return policy;
    },
  };

  function resolve(key: Buffer): ResourcePolicy {
    const text = key.toString('utf8');
    const gr = groupResourceOf(text, etcdPrefix, rules);
    const name = gr
      ? formatGroupResource(gr)
      : `?/${text.startsWith(prefix) ? (text.slice(prefix.length).split('/')[0] ?? '') : text}`;
    const cached = byResource.get(name);
    if (cached) return cached;
    const resolved = gr ? resolveResource(config, gr) : resolveResource(config, { group: '?', resource: '?' });
    // An unplaceable key is only matched by `*.*`; otherwise it gets the identity fallback.
    const policy: ResourcePolicy = {
      resource: name,
      groupResource: gr,
      rule: resolved.rule,
      // A key atrest cannot place (e.g. /registry/ranges/serviceips) is reported, never a finding:
      // whether kube-apiserver encrypts it depends on internals a config file does not state.
      mustEncrypt: gr !== undefined && resolved.providers[0] !== undefined && !('identity' in resolved.providers[0]),
      transformer: deps.transformerFor(gr ?? { group: '?', resource: '?' }, resolved.providers),
      write: writeTargetOf(resolved.providers, deps.kmsV2KeyID),
      providers: resolved.providers.map(describeProvider),
      canRead: readerOf(resolved.providers),
    };
    byResource.set(name, policy);
    return policy;
  }
}

export { describeStoredValue, parseGroupResource, formatGroupResource, normalizeEtcdPrefix };
