// The scan engine: walks the selected keys page by page (bounded memory) and classifies every value
// — plaintext, or provider + key name / kms name + key_id — as current or stale against the
// configuration, and with `decrypt` whether it really decrypts. Never writes.

import { ProvidersFailedError } from '../transformers/prefix.js';
import { describeStoredValue, type StoredValueInfo } from '../transformers/describe.js';
import { storedValueCarriesSeal } from '../recovery/container.js';
import type { KeyValue } from './client.js';
import { formatLabel, isCurrent, writeTargetLabel, type PolicyResolver, type ResourcePolicy } from './policy.js';
import type { KeyRange, Selection } from './selection.js';
import { mapPool, prefetched } from '../paging.js';
import type { KeyValueSource } from './source.js';

export type FindingProblem = 'plaintext' | 'undecryptable';

export interface ScanFinding {
  readonly key: string;
  readonly resource: string;
  readonly problem: FindingProblem;
  /** What the value looks like: `plaintext`, `aescbc/key1`, `kms-v2/plugin key_id=...`. */
  readonly stored: string;
  /** The providers that were tried (undecryptable values). */
  readonly providersTried?: readonly string[];
  readonly reason?: string;
}

/** The counters a scan keeps for each resource and in total. */
export interface ScanCounts {
  keys: number;
  plaintext: number;
  encrypted: number;
  current: number;
  stale: number;
  /** kms v2 values whose currency needs the plugin's key_id, which was not available. */
  unknown: number;
  /** Values that did not decrypt (with decrypt), or that no configured provider can read (without). */
  undecryptable: number;
  /** kms v1/v2 values, and how many of them carry a recovery seal (break-glass recovery). */
  kms: number;
  recoverySealed: number;
}

function zeroCounts(): ScanCounts {
  return { keys: 0, plaintext: 0, encrypted: 0, current: 0, stale: 0, unknown: 0, undecryptable: 0, kms: 0, recoverySealed: 0 };
}

export interface ResourceScan extends ScanCounts {
  readonly resource: string;
  readonly rule: string | null;
  readonly mustEncrypt: boolean;
  readonly writeProvider: string;
  readonly providers: readonly string[];
  /** Stored shapes and how many values have each. */
  readonly formats: Record<string, number>;
}

export interface ScanReport {
  readonly decrypt: boolean;
  readonly selection: string;
  readonly resources: ResourceScan[];
  readonly totals: ScanCounts;
  /** Plaintext where the config requires encryption, and undecryptable values (first maxFindings). */
  readonly findings: ScanFinding[];
  readonly findingsTotal: number;
}

export interface ScanOptions {
  readonly source: KeyValueSource;
  readonly selection: Selection;
  readonly policies: PolicyResolver;
  readonly decrypt?: boolean;
  /** Parallel decryptions (they may each call a KMS plugin). */
  readonly concurrency?: number;
  /** Most values a page holds (default SCAN_PAGE_VALUES); pages are sized by bytes below that. */
  readonly pageSize?: number;
  /** Findings kept in the report; the total is always counted. Default 1000. */
  readonly maxFindings?: number;
  /** Only these ranges (default: the selection's). */
  readonly ranges?: readonly KeyRange[];
  readonly onProgress?: (scanned: number) => void;
  /**
   * With decrypt: values already proven to decrypt, as current, by their writer (rewrite's read-back
   * of its own transaction). They are classified from their stored bytes; any that do not then look
   * current are decrypted like the rest.
   */
  readonly verified?: (kv: KeyValue) => boolean;
}

export interface ValueClassification {
  readonly stored: string;
  readonly plaintext: boolean;
  readonly state: 'current' | 'stale' | 'unknown' | 'undecryptable';
  /** kms values: whether a recovery seal travels with it; undefined for other formats. */
  readonly recoverySealed?: boolean;
  readonly providersTried?: readonly string[];
  readonly reason?: string;
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The providers named by a failed read, in the order they were tried. */
export function providersTried(err: unknown, policy: ResourcePolicy): string[] {
  if (err instanceof ProvidersFailedError) return err.attempts.map((a) => a.description);
  return [...policy.providers];
}

export async function classifyValue(
  kv: KeyValue,
  policy: ResourcePolicy,
  decrypt: boolean,
): Promise<ValueClassification> {
  if (!decrypt) return classifyStored(kv, policy);
  const info = describeStoredValue(kv.value);
  return withSeal(kv, info, await classifyDecrypted(kv, info, policy));
}

function withSeal(kv: KeyValue, info: StoredValueInfo, c: ValueClassification): ValueClassification {
  const sealed = storedValueCarriesSeal(kv.value, info);
  return sealed === undefined ? c : { ...c, recoverySealed: sealed };
}

/** Without decrypting: what the stored bytes say (format, key name), against the configuration. */
function classifyStored(kv: KeyValue, policy: ResourcePolicy): ValueClassification {
  const info = describeStoredValue(kv.value);
  const stored = formatLabel(info);
  const plaintext = info.format === 'identity';
  if (!policy.canRead(info)) {
    return withSeal(kv, info, {
      stored,
      plaintext,
      state: 'undecryptable',
      providersTried: [...policy.providers],
      reason: 'no configured provider reads this prefix/key',
    });
  }
  const current = isCurrent(info, policy.write);
  return withSeal(kv, info, { stored, plaintext, state: current === undefined ? 'unknown' : current ? 'current' : 'stale' });
}

/** Decrypting with the configured transformer: whether the value really reads, and if it is stale. */
async function classifyDecrypted(
  kv: KeyValue,
  info: StoredValueInfo,
  policy: ResourcePolicy,
): Promise<ValueClassification> {
  const stored = formatLabel(info);
  const plaintext = info.format === 'identity';
  try {
    const r = await policy.transformer.transformFromStorage(kv.value, { authenticatedData: kv.key });
    return { stored, plaintext, state: r.stale ? 'stale' : 'current' };
  } catch (err) {
    return {
      stored,
      plaintext,
      state: 'undecryptable',
      providersTried: providersTried(err, policy),
      reason: messageOf(err),
    };
  }
}

/**
 * Pages of at most this many values, and about SCAN_PAGE_BYTES each (the client sizes them from the
 * previous page). Fewer pages cost etcd less (it counts the rest of the range for every page: 100,000
 * values in pages of 500 took etcd 3x the CPU of one range, pages of ~2,000 under 2x). The byte bound
 * keeps memory flat whatever the value size: two pages are held at a time (the one being classified,
 * the one prefetched), and a page's values are views of its one response buffer, which lives until
 * its last value is collected. 8 MiB pages were a little faster but raised peak RSS by ~70 MiB.
 */
export const SCAN_PAGE_VALUES = 10_000;
export const SCAN_PAGE_BYTES = 2 * 1024 * 1024;

export async function scan(options: ScanOptions): Promise<ScanReport> {
  const decrypt = options.decrypt === true;
  const maxFindings = options.maxFindings ?? 1000;
  const byResource = new Map<string, ResourceScan>();
  const findings: ScanFinding[] = [];
  let findingsTotal = 0;
  let scanned = 0;

  const summaryFor = (p: ResourcePolicy): ResourceScan => {
    let s = byResource.get(p.resource);
    if (!s) {
      s = {
        resource: p.resource,
        rule: p.rule,
        mustEncrypt: p.mustEncrypt,
        writeProvider: writeTargetLabel(p.write),
        providers: p.providers,
        ...zeroCounts(),
        formats: {},
      };
      byResource.set(p.resource, s);
    }
    return s;
  };

  const record = (kv: KeyValue, policy: ResourcePolicy, c: ValueClassification): void => {
    const s = summaryFor(policy);
    s.keys++;
    if (c.plaintext) s.plaintext++;
    else s.encrypted++;
    s.formats[c.stored] = (s.formats[c.stored] ?? 0) + 1;
    if (c.state === 'undecryptable') s.undecryptable++;
    else s[c.state]++;
    if (c.recoverySealed !== undefined) s.kms++;
    if (c.recoverySealed === true) s.recoverySealed++;
    let problem: FindingProblem | undefined;
    if (c.plaintext && policy.mustEncrypt) problem = 'plaintext';
    else if (c.state === 'undecryptable') problem = 'undecryptable';
    if (problem) {
      findingsTotal++;
      if (findings.length < maxFindings) {
        findings.push({
          key: kv.key.toString('utf8'),
          resource: policy.resource,
          problem,
          stored: c.stored,
          ...(c.state === 'undecryptable' ? { providersTried: c.providersTried ?? [], reason: c.reason ?? '' } : {}),
        });
      }
    }
  };

  const pageOptions = { pageSize: options.pageSize ?? SCAN_PAGE_VALUES, pageBytes: SCAN_PAGE_BYTES };
  for (const range of options.ranges ?? options.selection.ranges) {
    for await (const page of prefetched(options.source.pages(range.start, range.end, pageOptions))) {
      if (decrypt) {
        // decryption may call a KMS plugin: several in flight
        const selected: { kv: KeyValue; policy: ResourcePolicy }[] = [];
        for (const kv of page) {
          const policy = options.policies.forKey(kv.key);
          if (!options.selection.includes(policy)) continue;
          if (options.verified?.(kv) === true) {
            const c = classifyStored(kv, policy);
            if (c.state === 'current') {
              record(kv, policy, c);
              continue;
            }
          }
          selected.push({ kv, policy });
        }
        const results = await mapPool(selected, options.concurrency ?? 8, ({ kv, policy }) =>
          classifyValue(kv, policy, true),
        );
        results.forEach((c, i) => record(selected[i]!.kv, selected[i]!.policy, c));
      } else {
        // without decrypting, classifying is pure CPU: no promise per value
        for (const kv of page) {
          const policy = options.policies.forKey(kv.key);
          if (options.selection.includes(policy)) record(kv, policy, classifyStored(kv, policy));
        }
      }
      scanned += page.length;
      options.onProgress?.(scanned);
    }
  }

  const resources = [...byResource.values()].sort((a, b) => a.resource.localeCompare(b.resource));
  const totals = zeroCounts();
  for (const r of resources) {
    for (const k of Object.keys(totals) as (keyof ScanCounts)[]) totals[k] += r[k];
  }
  return { decrypt, selection: options.selection.label, resources, totals, findings, findingsTotal };
}
