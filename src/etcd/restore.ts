// Turns decrypted stored objects into manifests a fresh cluster accepts with `kubectl create -f`:
// the server-owned metadata is dropped (uid, resourceVersion, creationTimestamp, generation,
// managedFields, selfLink), so are owner references (their uids name objects of the old cluster: the
// garbage collector would delete the restored object) and kubectl's last-applied annotation (it
// repeats the whole object, Secret data included, and the old uid). Namespaces come first.

import type { PolicyResolver } from './policy.js';
import { storagePrefixes, type Selection } from './selection.js';
import type { KeyValueSource } from './source.js';

const SERVER_OWNED_METADATA = [
  'uid',
  'resourceVersion',
  'creationTimestamp',
  'generation',
  'managedFields',
  'selfLink',
  'deletionTimestamp',
  'deletionGracePeriodSeconds',
  'ownerReferences',
] as const;
const DROPPED_ANNOTATIONS = ['kubectl.kubernetes.io/last-applied-configuration'] as const;
/** Namespaces every fresh cluster already has: creating them again would fail. */
export const BUILT_IN_NAMESPACES: readonly string[] = ['default', 'kube-system', 'kube-public', 'kube-node-lease'];

export type RestoreResult =
  | { readonly ok: true; readonly object: Record<string, unknown> }
  | { readonly ok: false; readonly reason: string };

/** The object as a create-ready manifest, or why atrest cannot restore it (only partly decoded). */
export function restorableObject(object: Record<string, unknown>): RestoreResult {
  if ('rawSize' in object || 'decodeError' in object) {
    return {
      ok: false,
      reason: `only partly decoded (${String(object['kind'] ?? 'unknown kind')}): atrest decodes Secrets, ConfigMaps and JSON-stored objects in full`,
    };
  }
  const out: Record<string, unknown> = { ...object };
  const meta = { ...((object['metadata'] ?? {}) as Record<string, unknown>) };
  for (const f of SERVER_OWNED_METADATA) delete meta[f];
  const annotations = meta['annotations'] as Record<string, string> | undefined;
  if (annotations !== undefined) {
    const kept = { ...annotations };
    for (const a of DROPPED_ANNOTATIONS) delete kept[a];
    if (Object.keys(kept).length > 0) meta['annotations'] = kept;
    else delete meta['annotations'];
  }
  out['metadata'] = meta;
  delete out['status'];
  return { ok: true, object: out };
}

/** A Namespace manifest. */
export function namespaceManifest(name: string): Record<string, unknown> {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name } };
}

/**
 * The namespaces of every selected key, read from the keys alone (`<prefix><resource>/<ns>/<name>`),
 * so they can be written before the objects without decrypting anything twice.
 */
export async function namespacesOf(
  source: KeyValueSource,
  selection: Selection,
  policies: PolicyResolver,
  etcdPrefix: string,
): Promise<string[]> {
  const found = new Set<string>();
  for (const range of selection.ranges) {
    for await (const page of source.pages(range.start, range.end, { pageSize: 1000, keysOnly: true })) {
      for (const kv of page) {
        const policy = policies.forKey(kv.key);
        if (!selection.includes(policy) || policy.groupResource === undefined) continue;
        const key = kv.key.toString('utf8');
        const base = storagePrefixes(policy.groupResource, etcdPrefix).find((p) => key.startsWith(p));
        if (base === undefined) continue;
        const rest = key.slice(base.length).split('/');
        if (rest.length >= 2 && rest[0] !== '') found.add(rest[0]!);
      }
    }
  }
  return [...found].sort();
}

