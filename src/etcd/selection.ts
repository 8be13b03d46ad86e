// Which etcd keys a command covers: `--resource secrets,configmaps`, `--all`, or by default the
// resources the encryption configuration names. Exact resources become narrow key ranges (their
// storage paths); wildcards and `--all` walk the whole `--etcd-prefix` and filter key by key.

import type { EncryptionConfiguration } from '../config/types.js';
import {
  ETCD_PATH_RESOURCES,
  formatGroupResource,
  indexRules,
  normalizeEtcdPrefix,
  parseGroupResource,
  type GroupResource,
} from '../config/resolve.js';
import { prefixRangeEnd } from './client.js';
import type { ResourcePolicy } from './policy.js';

export interface KeyRange {
  readonly start: Buffer;
  readonly end: Buffer;
}

export interface Selection {
  /** Disjoint, sorted key ranges to walk. */
  readonly ranges: readonly KeyRange[];
  /** Whether a key (already placed by the policy resolver) is covered. */
  includes(policy: ResourcePolicy): boolean;
  /** e.g. `secrets,configmaps` or `all under /registry/`; recorded in checkpoints. */
  readonly label: string;
  /**
   * Each selected resource (or the whole prefix, for --all and wildcards) with the key ranges it is
   * stored under: the commands refuse to report success when one of them holds no key at all.
   */
  readonly parts: readonly SelectionPart[];
}

export interface SelectionPart {
  /** `secrets`, `*.apps`, or `all under /registry/`. */
  readonly resource: string;
  readonly group?: GroupResource;
  readonly ranges: readonly KeyRange[];
}

export interface SelectionOptions {
  readonly etcdPrefix: string;
  /** Config spellings: `secrets`, `deployments.apps`, `*.apps`, `*.*`. */
  readonly resources?: readonly string[];
  readonly all?: boolean;
  readonly config: EncryptionConfiguration;
}

/** The storage paths of one exact group/resource under a normalised prefix. */
export function storagePrefixes(gr: GroupResource, prefix: string): string[] {
  const out = Object.entries(ETCD_PATH_RESOURCES)
    .filter(([, v]) => v.group === gr.group && v.resource === gr.resource)
    .map(([path]) => `${prefix}${path}/`);
  if (gr.group !== '') out.push(`${prefix}${gr.group}/${gr.resource}/`);
  if (out.length === 0) out.push(`${prefix}${gr.resource}/`);
  return out;
}

function matches(item: GroupResource, gr: GroupResource | undefined): boolean {
  if (gr === undefined) return item.group === '*' && item.resource === '*';
  return (item.group === '*' || item.group === gr.group) && (item.resource === '*' || item.resource === gr.resource);
}

export function createSelection(options: SelectionOptions): Selection {
  const prefix = normalizeEtcdPrefix(options.etcdPrefix);
  const whole: KeyRange = { start: Buffer.from(prefix), end: prefixRangeEnd(Buffer.from(prefix)) };
  if (options.all) {
    const label = `all under ${prefix}`;
    return { ranges: [whole], includes: () => true, label, parts: [{ resource: label, ranges: [whole] }] };
  }
  let items: GroupResource[];
  if (options.resources && options.resources.length > 0) {
    items = options.resources.map((r) => parseGroupResource(r.trim()));
  } else {
    items = [...indexRules(options.config).values()].map((v) => parseGroupResource(v.rule));
  }
  const label = items.map(formatGroupResource).join(',');
  const wildcard = items.some((i) => i.group === '*' || i.resource === '*');
  const includes = (policy: ResourcePolicy): boolean => items.some((i) => matches(i, policy.groupResource));
  const rangeOf = (s: string): KeyRange => ({ start: Buffer.from(s), end: prefixRangeEnd(Buffer.from(s)) });
  const parts: SelectionPart[] = items.map((gr) => {
    const name = formatGroupResource(gr);
    if (gr.group === '*' || gr.resource === '*') return { resource: name, ranges: [whole] };
    return { resource: name, group: gr, ranges: storagePrefixes(gr, prefix).map(rangeOf) };
  });
  if (wildcard) return { ranges: [whole], includes, label, parts };
  const starts = [...new Set(items.flatMap((gr) => storagePrefixes(gr, prefix)))].sort();
  // Drop a path nested inside another selected path, so no key is visited twice.
  const disjoint = starts.filter((s, i) => !starts.some((o, j) => j !== i && s !== o && s.startsWith(o)));
  const ranges = disjoint.map(rangeOf);
  return { ranges, includes, label, parts };
}
