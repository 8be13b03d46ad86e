// "Nothing matched" is never success: before scan, rewrite or decrypt --all report on a selection,
// every selected resource (or the whole prefix) must hold at least one key. When one does not, the
// error names the prefix that was read and, where etcd holds Kubernetes data elsewhere, that prefix
// (a wrong --etcd-prefix) or the resource's plural (`resources: [secret]` in the config).

import { AtrestError } from '../errors.js';
import { formatGroupResource } from '../config/resolve.js';
import { keyAfter, prefixRangeEnd } from './client.js';
import { storagePrefixes, type KeyRange, type Selection, type SelectionPart } from './selection.js';
import type { KeyValueSource } from './source.js';

/** Top-level key segments visited (one etcd request each) while looking for Kubernetes data. */
const MAX_SEGMENTS = 64;
/** Keys sampled under one segment whose path does not show a `namespaces/` directory directly. */
const SAMPLE_KEYS = 500;
/** Path segments every Kubernetes keyspace has; the text before them is the --etcd-prefix. */
const KUBERNETES_MARKERS = /^(.*?)\/(namespaces|secrets|configmaps|serviceaccounts|minions|pods)\//;

export interface EmptyPart {
  readonly resource: string;
  /** The key prefixes that were read and held nothing. */
  readonly prefixes: readonly string[];
  /** e.g. `did you mean "secrets"? (12 keys under /registry/secrets/)` */
  readonly hint?: string;
}

export interface KubernetesDataLocation {
  /** The etcd prefix the data sits under, e.g. `/registry`. */
  readonly prefix: string;
  /** One key under it (names a namespace or an object, never a value). */
  readonly sample: string;
}

async function firstKey(source: KeyValueSource, start: Uint8Array, end: Uint8Array): Promise<Buffer | undefined> {
  for await (const page of source.pages(start, end, { pageSize: 1, keysOnly: true })) {
    if (page.length > 0) return page[0]!.key;
  }
  return undefined;
}

const hasKey = async (source: KeyValueSource, r: KeyRange): Promise<boolean> =>
  (await firstKey(source, r.start, r.end)) !== undefined;

const prefixOf = (r: KeyRange): string => r.start.toString('utf8');

/** The parts of a selection that hold no key, each with a hint where a near miss holds data. */
export async function findEmptyParts(
  source: KeyValueSource,
  selection: Selection,
  etcdPrefix: string,
): Promise<EmptyPart[]> {
  const empty: EmptyPart[] = [];
  for (const part of selection.parts) {
    let found = false;
    for (const r of part.ranges) if (!found && (await hasKey(source, r))) found = true;
    if (found) continue;
    const hint = await pluralHint(source, part, etcdPrefix);
    empty.push({ resource: part.resource, prefixes: part.ranges.map(prefixOf), ...(hint ? { hint } : {}) });
  }
  return empty;
}

/** `secret` -> "did you mean secrets", when the plural holds keys under the same prefix. */
async function pluralHint(source: KeyValueSource, part: SelectionPart, etcdPrefix: string): Promise<string | undefined> {
  const gr = part.group;
  if (gr === undefined) return undefined;
  const lower = gr.resource.toLowerCase();
  const candidates = [lower, `${lower}s`, `${lower}es`].filter((c) => c !== gr.resource);
  for (const resource of candidates) {
    const alt = { group: gr.group, resource };
    for (const p of storagePrefixes(alt, etcdPrefix)) {
      const start = Buffer.from(p);
      if (await hasKey(source, { start, end: prefixRangeEnd(start) })) {
        return `did you mean "${formatGroupResource(alt)}"? (keys exist under ${p})`;
      }
    }
  }
  return undefined;
}

/**
 * Where etcd holds Kubernetes data: walks the top-level key segments (`/registry/`, `/other/`, ...)
 * one request each, and in each looks for the directories every cluster has (namespaces, secrets...).
 */
export async function locateKubernetesData(source: KeyValueSource): Promise<KubernetesDataLocation[]> {
  const found: KubernetesDataLocation[] = [];
  const endOfKeyspace = Buffer.from([0]);
  let cursor: Buffer = Buffer.from([0]);
  for (let i = 0; i < MAX_SEGMENTS; i++) {
    const key = await firstKey(source, cursor, endOfKeyspace);
    if (key === undefined) break;
    const text = key.toString('utf8');
    const slash = text.indexOf('/', 1);
    if (slash < 0) {
      cursor = keyAfter(key);
      continue;
    }
    const segment = Buffer.from(text.slice(0, slash + 1), 'utf8');
    const segmentEnd = prefixRangeEnd(segment);
    let sampled = 0;
    outer: for await (const page of source.pages(segment, segmentEnd, { pageSize: 100, keysOnly: true })) {
      for (const kv of page) {
        const m = KUBERNETES_MARKERS.exec(kv.key.toString('utf8'));
        if (m) {
          found.push({ prefix: m[1] === '' ? '/' : m[1]!, sample: kv.key.toString('utf8') });
          break outer;
        }
        if (++sampled >= SAMPLE_KEYS) break outer;
      }
    }
    if (segmentEnd.length === 1 && segmentEnd[0] === 0) break;
    cursor = segmentEnd;
  }
  return found;
}

/** The selection matched no key somewhere: nothing was read, written or printed. */
export class EmptySelectionError extends AtrestError {
  readonly empty: readonly EmptyPart[];
  readonly elsewhere: readonly KubernetesDataLocation[];

  constructor(command: string, etcdPrefix: string, empty: readonly EmptyPart[], elsewhere: readonly KubernetesDataLocation[]) {
    const lines = empty.map(
      (e) => `  ${e.resource}: no key under ${e.prefixes.join(', ')}${e.hint ? ` — ${e.hint}` : ''}`,
    );
    const normalized = etcdPrefix.replace(/\/$/, '');
    const other = elsewhere.filter((l) => l.prefix !== normalized);
    if (other.length > 0) {
      lines.push(
        `  etcd holds Kubernetes data under ${other.map((l) => `${l.prefix} (e.g. ${l.sample})`).join(', ')}: ` +
          `is --etcd-prefix ${other[0]!.prefix} what kube-apiserver uses?`,
      );
    } else if (elsewhere.length === 0) {
      lines.push('  no Kubernetes data was found anywhere in this etcd: check --endpoints (or --snapshot)');
    }
    super(
      'ERR_SELECTION_EMPTY',
      `${command}: nothing to do under --etcd-prefix ${etcdPrefix}, which is not success:\n${lines.join('\n')}\n` +
        '  fix the prefix or the resource names (in the config or --resource); ' +
        'if an empty result is really expected, rerun with --allow-empty',
    );
    this.empty = empty;
    this.elsewhere = elsewhere;
  }
}

/** Throws EmptySelectionError when a selected part holds no key. */
export async function assertSelectionNotEmpty(
  command: string,
  source: KeyValueSource,
  selection: Selection,
  etcdPrefix: string,
  whole: () => KeyValueSource = () => source,
): Promise<void> {
  const empty = await findEmptyParts(source, selection, etcdPrefix);
  if (empty.length === 0) return;
  throw new EmptySelectionError(command, etcdPrefix, empty, await locateKubernetesData(whole()));
}
