// Staging a provider change across several API servers: from the EncryptionConfiguration every server
// runs now (OLD) to the one wanted (NEW). While servers are restarted one at a time, some run OLD and
// some NEW, and each must read what any other writes. Pure: no I/O (src/cli/config.ts reads and writes).
//
// Each provider contributes read units, one per stored prefix: a local key (`k8s:enc:aescbc:v1:key1:`),
// a kms provider (`k8s:enc:kms:v2:atrest:`), or identity (plaintext). The first unit of a list writes,
// every unit reads. A direct switch is safe when OLD reads NEW's write unit and NEW reads OLD's. When
// it is not, upstream's two phases (kubernetes.io, "Encrypting Confidential Data at Rest", rotating a
// key) are built here:
//   1 read   OLD, plus every unit of NEW as a reader after OLD's writer: writes unchanged
//   2 write  NEW, plus every unit of OLD that NEW drops, as a reader: writes switch
//   3 final  NEW (drops old readers): only after a rewrite converged
// Consecutive phases are each a safe direct switch; a phase equal to the one before it is left out.

import { AtrestError, ConfigInvalidError, type ConfigProblem } from '../errors.js';
import {
  providerType,
  type EncryptionConfiguration,
  type Key,
  type KMSConfiguration,
  type ProviderConfiguration,
  type ResourceConfiguration,
} from './types.js';

type LocalType = 'aescbc' | 'aesgcm' | 'secretbox';

export type ReadUnit =
  | { readonly kind: 'local'; readonly type: LocalType; readonly key: Key }
  | { readonly kind: 'kms'; readonly kms: KMSConfiguration }
  | { readonly kind: 'identity' };

/** The stored prefix a unit writes and recognises; '' for identity (plaintext). */
export function unitPrefix(u: ReadUnit): string {
  if (u.kind === 'identity') return '';
  if (u.kind === 'kms') return `k8s:enc:kms:${u.kms.apiVersion}:${u.kms.name}:`;
  return `k8s:enc:${u.type}:v1:${u.key.name}:`;
}

/** How tables name a unit: `aescbc/key1`, `kms-v2/atrest`, `identity (plaintext)`. */
export function unitLabel(u: ReadUnit): string {
  if (u.kind === 'identity') return 'identity (plaintext)';
  if (u.kind === 'kms') return `kms-${u.kms.apiVersion}/${u.kms.name}`;
  return `${u.type}/${u.key.name}`;
}

function describeUnit(u: ReadUnit): string {
  return u.kind === 'identity'
    ? 'identity (plaintext)'
    : `${unitLabel(u)} (prefix ${unitPrefix(u)})`;
}

export function readUnits(providers: readonly ProviderConfiguration[]): ReadUnit[] {
  const units: ReadUnit[] = [];
  for (const p of providers) {
    if ('identity' in p) units.push({ kind: 'identity' });
    else if ('kms' in p) units.push({ kind: 'kms', kms: p.kms });
    else {
      const type = providerType(p) as LocalType;
      const keys = 'aescbc' in p ? p.aescbc.keys : 'aesgcm' in p ? p.aesgcm.keys : p.secretbox.keys;
      for (const key of keys) units.push({ kind: 'local', type, key });
    }
  }
  return units;
}

const hasUnit = (units: readonly ReadUnit[], u: ReadUnit): boolean =>
  units.some((x) => unitPrefix(x) === unitPrefix(u));

/** Adds `extra` units as readers to `base` (never before its writer), keeping a trailing identity last. */
function withReaders(
  base: readonly ProviderConfiguration[],
  extra: readonly ReadUnit[],
): ProviderConfiguration[] {
  const out: ProviderConfiguration[] = [...base];
  const trailingIdentity = out.length > 1 && 'identity' in out[out.length - 1]!;
  let insertAt = trailingIdentity ? out.length - 1 : out.length;
  const insert = (p: ProviderConfiguration): void => {
    out.splice(insertAt, 0, p);
    insertAt++;
  };
  for (const u of extra) {
    if (u.kind === 'identity') {
      out.push({ identity: {} });
    } else if (u.kind === 'kms') {
      insert({ kms: u.kms });
    } else {
      const at = out.findIndex((p) => u.type in p);
      if (at < 0) {
        insert({ [u.type]: { keys: [u.key] } } as unknown as ProviderConfiguration);
      } else {
        const p = out[at]! as Record<LocalType, { keys: readonly Key[] }>;
        out[at] = {
          [u.type]: { keys: [...p[u.type].keys, u.key] },
        } as unknown as ProviderConfiguration;
      }
    }
  }
  return out;
}

export interface StagePhase {
  readonly name: 'read' | 'write' | 'final';
  readonly config: EncryptionConfiguration;
  /** One line per resources entry: what this phase changes. */
  readonly summary: readonly string[];
}

export interface StagePlan {
  /** True when every server can read what any other writes while OLD and NEW both run. */
  readonly directSafe: boolean;
  /** Why a direct switch is not safe (empty when it is). */
  readonly problems: readonly string[];
  /** Readers NEW drops: fine only after a rewrite converged. */
  readonly warnings: readonly string[];
  /** The configurations to deploy in order; the last one is NEW. */
  readonly phases: readonly StagePhase[];
}

function resourcesText(r: ResourceConfiguration): string {
  return r.resources.join(', ');
}

/**
 * Plans the change from `from` to `to`; `fromName`/`toName` name the files in messages. Throws
 * ConfigInvalidError when the two cannot be staged at all (a key name reused with another secret) and
 * ERR_NOT_SUPPORTED when their resources lists differ.
 */
export function planStage(
  from: EncryptionConfiguration,
  to: EncryptionConfiguration,
  fromName: string,
  toName: string,
): StagePlan {
  const sameResources =
    from.resources.length === to.resources.length &&
    from.resources.every(
      (r, i) => r.resources.join('\u0000') === to.resources[i]!.resources.join('\u0000'),
    );
  if (!sameResources) {
    throw new AtrestError(
      'ERR_NOT_SUPPORTED',
      `config stage compares resources entries one to one, but ${fromName} lists ` +
        `[${from.resources.map(resourcesText).join('] [')}] and ${toName} lists ` +
        `[${to.resources.map(resourcesText).join('] [')}]; change which resources are covered in a ` +
        'separate step, keeping the providers as they are',
    );
  }

  const conflicts: ConfigProblem[] = [];
  const problems: string[] = [];
  const warnings: string[] = [];
  const read: ResourceConfiguration[] = [];
  const write: ResourceConfiguration[] = [];
  to.resources.forEach((next, i) => {
    const prev = from.resources[i]!;
    const oldUnits = readUnits(prev.providers);
    const newUnits = readUnits(next.providers);
    const what = resourcesText(next);
    for (const [j, u] of newUnits.entries()) {
      const same = oldUnits.find((x) => unitPrefix(x) === unitPrefix(u));
      if (same?.kind === 'local' && u.kind === 'local' && same.key.secret !== u.key.secret) {
        conflicts.push({
          path: `resources[${i}] unit ${j} (${unitLabel(u)})`,
          message:
            `${toName} gives key ${u.key.name} another secret than ${fromName} (REDACTED): values ` +
            `written under ${unitPrefix(u)} would not decrypt; a new key needs a new name`,
        });
      }
    }
    const oldWriter = oldUnits[0]!;
    const newWriter = newUnits[0]!;
    if (!hasUnit(oldUnits, newWriter)) {
      problems.push(
        `${what}: servers still on ${fromName} could not read what servers on ${toName} write: ` +
          `${toName} writes with ${describeUnit(newWriter)}, which ${fromName} does not list, so ` +
          `their reads fail with "no matching prefix found"`,
      );
    }
    if (!hasUnit(newUnits, oldWriter)) {
      problems.push(
        `${what}: servers already on ${toName} could not read what servers still on ${fromName} ` +
          `write with ${describeUnit(oldWriter)}, nor any value stored that way before`,
      );
    }
    for (const u of oldUnits) {
      if (!hasUnit(newUnits, u) && unitPrefix(u) !== unitPrefix(oldWriter)) {
        warnings.push(
          `${what}: ${toName} no longer reads ${describeUnit(u)}: deploy it only after ` +
            '"atrest rewrite" converged, or values still stored that way become unreadable',
        );
      }
    }
    read.push({
      resources: next.resources,
      providers: withReaders(
        prev.providers,
        newUnits.filter((u) => !hasUnit(oldUnits, u)),
      ),
    });
    write.push({
      resources: next.resources,
      providers: withReaders(
        next.providers,
        oldUnits.filter((u) => !hasUnit(newUnits, u)),
      ),
    });
  });
  if (conflicts.length > 0)
    throw new ConfigInvalidError(`${toName} (against ${fromName})`, conflicts);

  const header = { apiVersion: to.apiVersion, kind: to.kind } as const;
  if (problems.length === 0) {
    return {
      directSafe: true,
      problems,
      warnings,
      phases: [{ name: 'final', config: to, summary: summarize(from, to) }],
    };
  }
  const candidates: StagePhase[] = [];
  const readConfig: EncryptionConfiguration = { ...header, resources: read };
  const writeConfig: EncryptionConfiguration = { ...header, resources: write };
  let previous: EncryptionConfiguration = from;
  for (const [name, config] of [
    ['read', readConfig],
    ['write', writeConfig],
    ['final', to],
  ] as const) {
    if (sameProviders(previous, config)) continue;
    candidates.push({ name, config, summary: summarize(previous, config) });
    previous = config;
  }
  return { directSafe: false, problems, warnings, phases: candidates };
}

function unitKey(u: ReadUnit): string {
  if (u.kind === 'local') return `${unitPrefix(u)}\u0000${u.key.secret}`;
  if (u.kind === 'kms') return `${unitPrefix(u)}\u0000${u.kms.endpoint}\u0000${u.kms.timeout}`;
  return unitPrefix(u);
}

function sameProviders(a: EncryptionConfiguration, b: EncryptionConfiguration): boolean {
  return (
    a.resources.length === b.resources.length &&
    a.resources.every((r, i) => {
      const x = readUnits(r.providers).map(unitKey);
      const y = readUnits(b.resources[i]!.providers).map(unitKey);
      return x.length === y.length && x.every((k, j) => k === y[j]);
    })
  );
}

/** Per resources entry: "writes W; reads also A, B; no longer reads C". */
function summarize(from: EncryptionConfiguration, to: EncryptionConfiguration): string[] {
  return to.resources.map((r, i) => {
    const before = readUnits(from.resources[i]!.providers);
    const after = readUnits(r.providers);
    const parts: string[] = [];
    const writer = after[0]!;
    parts.push(
      unitPrefix(writer) === unitPrefix(before[0]!)
        ? `writes ${unitLabel(writer)} (unchanged)`
        : `writes ${unitLabel(writer)} (was ${unitLabel(before[0]!)})`,
    );
    const added = after.filter((u) => !hasUnit(before, u) && u !== writer);
    if (added.length > 0) parts.push(`now also reads ${added.map(unitLabel).join(', ')}`);
    const dropped = before.filter((u) => !hasUnit(after, u));
    if (dropped.length > 0) parts.push(`no longer reads ${dropped.map(unitLabel).join(', ')}`);
    return `${resourcesText(r)}: ${parts.join('; ')}`;
  });
}

/** The configuration as a plain object for YAML/JSON output; secrets REDACTED unless asked for. */
export function configDocument(
  config: EncryptionConfiguration,
  options: { readonly showSecrets: boolean },
): Record<string, unknown> {
  const keys = (list: readonly Key[]) =>
    list.map((k) => ({ name: k.name, secret: options.showSecrets ? k.secret : 'REDACTED' }));
  return {
    apiVersion: config.apiVersion,
    kind: config.kind,
    resources: config.resources.map((r) => ({
      resources: [...r.resources],
      providers: r.providers.map((p) => {
        if ('identity' in p) return { identity: {} };
        if ('aescbc' in p) return { aescbc: { keys: keys(p.aescbc.keys) } };
        if ('aesgcm' in p) return { aesgcm: { keys: keys(p.aesgcm.keys) } };
        if ('secretbox' in p) return { secretbox: { keys: keys(p.secretbox.keys) } };
        const k = p.kms;
        return {
          kms: {
            apiVersion: k.apiVersion,
            name: k.name,
            endpoint: k.endpoint,
            ...(k.apiVersion === 'v1' && k.cachesize !== undefined
              ? { cachesize: k.cachesize }
              : {}),
            timeout: k.timeoutText,
          },
        };
      }),
    })),
  };
}
