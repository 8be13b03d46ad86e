// The two calls `rewrite --via-api` makes on objects: list a page of them as PartialObjectMetadata
// (names and resourceVersions only: no Secret data ever reaches this process) and send one an empty
// JSON merge patch.

import { AtrestError } from '../errors.js';
import { apiReason, type ApiClient, type HttpResult } from './api-client.js';
import type { ResourceInfo } from './discovery.js';

export interface ListedObject {
  readonly namespace?: string;
  readonly name: string;
  readonly resourceVersion: string;
  /** `namespace/name` or `name`: the order of the etcd keys, hence of every list. */
  readonly key: string;
}

export type PatchOutcome =
  | { kind: 'patched'; resourceVersion: string }
  | { kind: 'gone' }
  | { kind: 'failed'; status: number; reason: string };

const METADATA_LIST_ACCEPT =
  'application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json';
const METADATA_ACCEPT =
  'application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json';

/** List order is etcd key order: byte order of `namespace/name` (names are ASCII). */
export function compareKeys(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** One page of a list; `expired` when the continue token's resourceVersion was compacted away. */
export async function listPage(
  client: ApiClient,
  info: ResourceInfo,
  limit: number,
  continueToken: string | undefined,
  signal?: AbortSignal,
): Promise<{ items: ListedObject[]; continueToken?: string } | 'expired'> {
  const query = new URLSearchParams({ limit: String(limit) });
  if (continueToken !== undefined) query.set('continue', continueToken);
  const res = await client.request(
    'GET',
    `${info.basePath}/${info.plural}?${query}`,
    { Accept: METADATA_LIST_ACCEPT },
    signal === undefined ? {} : { signal },
  );
  // 410 Gone (reason Expired): the continue token's resourceVersion was compacted away.
  if (res.status === 410 && continueToken !== undefined) return 'expired';
  if (res.status !== 200) {
    throw new AtrestError(
      'ERR_API',
      `cannot list ${info.resource}: ${res.status} ${apiReason(res)}`,
    );
  }
  const list = JSON.parse(res.body.toString('utf8')) as {
    metadata?: { continue?: unknown };
    items?: { metadata?: { name?: unknown; namespace?: unknown; resourceVersion?: unknown } }[];
  };
  const items = (list.items ?? []).flatMap((item) => listedObject(item.metadata ?? {}));
  const next = list.metadata?.continue;
  return typeof next === 'string' && next !== '' ? { items, continueToken: next } : { items };
}

function listedObject(metadata: {
  name?: unknown;
  namespace?: unknown;
  resourceVersion?: unknown;
}): ListedObject[] {
  const { name, namespace } = metadata;
  if (typeof name !== 'string') return [];
  const ns = typeof namespace === 'string' && namespace !== '' ? namespace : undefined;
  return [
    {
      name,
      ...(ns === undefined ? {} : { namespace: ns }),
      resourceVersion: typeof metadata.resourceVersion === 'string' ? metadata.resourceVersion : '',
      key: ns === undefined ? name : `${ns}/${name}`,
    },
  ];
}

/** The patch `{}`: the API server writes the object back only if its stored value is stale. */
export async function patchObject(
  client: ApiClient,
  info: ResourceInfo,
  item: ListedObject,
  dryRun: boolean,
): Promise<PatchOutcome> {
  const path =
    info.namespaced && item.namespace !== undefined
      ? `${info.basePath}/namespaces/${encodeURIComponent(item.namespace)}/${info.plural}/${encodeURIComponent(item.name)}`
      : `${info.basePath}/${info.plural}/${encodeURIComponent(item.name)}`;
  const query = dryRun ? '?dryRun=All' : '';
  let res: HttpResult;
  try {
    res = await client.request(
      'PATCH',
      path + query,
      { Accept: METADATA_ACCEPT, 'Content-Type': 'application/merge-patch+json' },
      { body: '{}' },
    );
  } catch (err) {
    return { kind: 'failed', status: 0, reason: err instanceof Error ? err.message : String(err) };
  }
  if (res.status === 404) return { kind: 'gone' };
  if (res.status !== 200) return { kind: 'failed', status: res.status, reason: apiReason(res) };
  return { kind: 'patched', resourceVersion: resourceVersionOf(res.body) };
}

function resourceVersionOf(body: Buffer): string {
  try {
    const obj = JSON.parse(body.toString('utf8')) as { metadata?: { resourceVersion?: unknown } };
    if (typeof obj.metadata?.resourceVersion === 'string') return obj.metadata.resourceVersion;
  } catch {
    // an unparseable success body still means the patch was accepted
  }
  return '';
}
