// parseEncryptionConfiguration: untrusted text -> a typed, defaulted, validated configuration, or a
// ConfigInvalidError listing every problem with its field path. Strict like kube-apiserver: unknown
// fields, duplicate fields and wrong types are errors. No I/O here (see load.ts).

import { ConfigInvalidError } from '../errors.js';
import type { ConfigProblem } from '../errors.js';
import { decodeConfigText, FloatValue } from './decode.js';
import type { PlainValue } from './decode.js';
import { parseGoDuration } from './go-syntax.js';
import {
  API_VERSION,
  createKey,
  DEFAULT_KMS_API_VERSION,
  DEFAULT_KMS_CACHESIZE,
  DEFAULT_KMS_TIMEOUT,
  KIND,
  LEGACY_API_VERSION,
  LEGACY_KIND,
} from './types.js';
import type {
  ConfigOptions,
  EncryptionConfiguration,
  Key,
  KMSConfiguration,
  ProviderConfiguration,
  ResourceConfiguration,
} from './types.js';
import { validateEncryptionConfiguration } from './validate.js';

type PlainObject = { readonly [key: string]: PlainValue };

/** What decoding yields before validation: kms fields may still hold out-of-range values. */
export interface LooseKMSConfiguration {
  readonly apiVersion: string;
  readonly name: string;
  readonly cachesize?: number;
  readonly endpoint: string;
  /** NaN when the text is not a Go duration (already reported). */
  readonly timeout: number;
  readonly timeoutText: string;
}

export type LooseProvider = {
  aesgcm?: { keys: Key[] };
  aescbc?: { keys: Key[] };
  secretbox?: { keys: Key[] };
  identity?: Record<string, never>;
  kms?: LooseKMSConfiguration;
};

export interface LooseConfiguration {
  apiVersion: string;
  kind: string;
  resources: { resources: string[]; providers: LooseProvider[] }[];
}

/**
 * Parses an EncryptionConfiguration (either kind, YAML or JSON). `source` names the file in error
 * messages. Throws ConfigInvalidError with every problem found; secrets never appear in it.
 */
export function parseEncryptionConfiguration(
  text: string,
  source: string,
  options: ConfigOptions = {},
): EncryptionConfiguration {
  const problems: ConfigProblem[] = [];
  const decoded = decodeConfigText(text);
  problems.push(...decoded.problems);
  if (decoded.value === undefined) throw new ConfigInvalidError(source, problems);

  const loose = readConfiguration(decoded.value, problems);
  if (loose !== undefined) {
    // A field that already failed to decode (wrong type) is not also reported as missing.
    const decodedBadly = new Set(problems.map((p) => p.path));
    problems.push(...validateEncryptionConfiguration(loose, options).filter((p) => !decodedBadly.has(p.path)));
  }
  if (problems.length > 0 || loose === undefined) throw new ConfigInvalidError(source, problems);
  return freezeConfiguration(loose);
}

function isObject(v: PlainValue | undefined): v is PlainObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof FloatValue);
}

function describe(v: PlainValue | undefined): string {
  if (v === null || v === undefined) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (v instanceof FloatValue || typeof v === 'number') return 'a number';
  if (typeof v === 'object') return 'an object';
  return `a ${typeof v}`;
}

function join(path: string, key: string): string {
  return path === '' ? key : `${path}.${key}`;
}

class Reader {
  readonly problems: ConfigProblem[];
  constructor(problems: ConfigProblem[]) {
    this.problems = problems;
  }

  problem(path: string, message: string): void {
    this.problems.push({ path, message });
  }

  /** Reports every field of `obj` not in `allowed` (strict decoding). */
  onlyFields(obj: PlainObject, path: string, allowed: readonly string[]): void {
    for (const k of Object.keys(obj)) {
      if (!allowed.includes(k)) this.problem(join(path, k), 'unknown field');
    }
  }

  /** A string field; absent or null reads as '' exactly as Go's decoder leaves a string untouched. */
  string(obj: PlainObject, key: string, path: string): string {
    const v = obj[key];
    if (v === undefined || v === null) return '';
    if (typeof v !== 'string') {
      this.problem(join(path, key), `must be a string, got ${describe(v)}`);
      return '';
    }
    return v;
  }

  /** A list field; absent or null reads as an empty list. */
  list(obj: PlainObject, key: string, path: string): readonly PlainValue[] {
    const v = obj[key];
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) {
      this.problem(join(path, key), `must be a list, got ${describe(v)}`);
      return [];
    }
    return v as readonly PlainValue[];
  }

  /** An object field; absent or null reads as absent (a nil pointer in Go). */
  object(obj: PlainObject, key: string, path: string): PlainObject | undefined {
    const v = obj[key];
    if (v === undefined || v === null) return undefined;
    if (!isObject(v)) {
      this.problem(join(path, key), `must be an object, got ${describe(v)}`);
      return undefined;
    }
    return v;
  }
}

function readConfiguration(root: PlainValue, problems: ConfigProblem[]): LooseConfiguration | undefined {
  const r = new Reader(problems);
  if (!isObject(root)) {
    r.problem('(root)', `must be an object, got ${describe(root)}`);
    return undefined;
  }
  const apiVersion = r.string(root, 'apiVersion', '');
  const kind = r.string(root, 'kind', '');
  if (apiVersion === '') r.problem('apiVersion', 'is required');
  if (kind === '') r.problem('kind', 'is required');
  if (apiVersion !== '' && kind !== '') {
    const known =
      (apiVersion === API_VERSION && kind === KIND) ||
      (apiVersion === LEGACY_API_VERSION && kind === LEGACY_KIND);
    if (!known) {
      r.problem(
        'kind',
        `no kind ${JSON.stringify(kind)} is registered for version ${JSON.stringify(apiVersion)}; ` +
          `use apiVersion ${API_VERSION} with kind ${KIND} (or the legacy apiVersion v1 with kind EncryptionConfig)`,
      );
    }
  }
  r.onlyFields(root, '', ['apiVersion', 'kind', 'resources']);

  const resources = r.list(root, 'resources', '').map((entry, i) => readResource(r, entry, `resources[${i}]`));
  return { apiVersion, kind, resources };
}

function readResource(
  r: Reader,
  entry: PlainValue,
  path: string,
): { resources: string[]; providers: LooseProvider[] } {
  if (!isObject(entry)) {
    if (entry !== null) r.problem(path, `must be an object, got ${describe(entry)}`);
    return { resources: [], providers: [] };
  }
  r.onlyFields(entry, path, ['resources', 'providers']);
  const resources = r.list(entry, 'resources', path).map((res, j) => {
    if (typeof res === 'string') return res;
    if (res !== null) r.problem(`${path}.resources[${j}]`, `must be a string, got ${describe(res)}`);
    return '';
  });
  const providers = r
    .list(entry, 'providers', path)
    .map((p, j) => readProvider(r, p, `${path}.providers[${j}]`));
  return { resources, providers };
}

function readProvider(r: Reader, p: PlainValue, path: string): LooseProvider {
  const out: LooseProvider = {};
  if (p === null) return out;
  if (!isObject(p)) {
    r.problem(path, `must be an object, got ${describe(p)}`);
    return out;
  }
  r.onlyFields(p, path, ['aesgcm', 'aescbc', 'secretbox', 'identity', 'kms']);
  for (const type of ['aesgcm', 'aescbc', 'secretbox'] as const) {
    const o = r.object(p, type, path);
    if (o === undefined) continue;
    const tp = join(path, type);
    r.onlyFields(o, tp, ['keys']);
    out[type] = { keys: r.list(o, 'keys', tp).map((k, i) => readKey(r, k, `${tp}.keys[${i}]`)) };
  }
  const identity = r.object(p, 'identity', path);
  if (identity !== undefined) {
    r.onlyFields(identity, join(path, 'identity'), []);
    out.identity = {};
  }
  const kms = r.object(p, 'kms', path);
  if (kms !== undefined) out.kms = readKms(r, kms, join(path, 'kms'));
  return out;
}

function readKey(r: Reader, k: PlainValue, path: string): Key {
  if (k === null) return createKey('', '');
  if (!isObject(k)) {
    r.problem(path, `must be an object, got ${describe(k)}`);
    return createKey('', '');
  }
  r.onlyFields(k, path, ['name', 'secret']);
  const name = r.string(k, 'name', path);
  const secretValue = k['secret'];
  let secret = '';
  if (typeof secretValue === 'string') secret = secretValue;
  // never echo what was found in a secret field, not even its type's content
  else if (secretValue !== undefined && secretValue !== null) r.problem(`${path}.secret`, 'must be a string (value REDACTED)');
  return createKey(name, secret);
}

const INT32_MIN = -2147483648;
const INT32_MAX = 2147483647;

function readKms(r: Reader, kms: PlainObject, path: string): LooseKMSConfiguration {
  r.onlyFields(kms, path, ['apiVersion', 'name', 'cachesize', 'endpoint', 'timeout']);
  const apiVersion = r.string(kms, 'apiVersion', path) || DEFAULT_KMS_API_VERSION;
  const name = r.string(kms, 'name', path);
  const endpoint = r.string(kms, 'endpoint', path);

  let cachesize: number | undefined;
  const cs = kms['cachesize'];
  if (cs !== undefined && cs !== null) {
    if (typeof cs !== 'number' || !Number.isInteger(cs)) {
      r.problem(`${path}.cachesize`, `must be an integer, got ${describe(cs)}`);
      cachesize = DEFAULT_KMS_CACHESIZE;
    } else if (cs < INT32_MIN || cs > INT32_MAX) {
      r.problem(`${path}.cachesize`, `${cs} does not fit in a 32-bit integer`);
      cachesize = DEFAULT_KMS_CACHESIZE;
    } else {
      cachesize = cs;
    }
  } else if (apiVersion === 'v1') {
    cachesize = DEFAULT_KMS_CACHESIZE;
  }

  let timeoutText = DEFAULT_KMS_TIMEOUT;
  const t = kms['timeout'];
  let timeoutNs: number = 3e9;
  if (t !== undefined && t !== null) {
    if (typeof t !== 'string') {
      r.problem(`${path}.timeout`, `must be a duration string such as "3s", got ${describe(t)}`);
    } else {
      timeoutText = t;
      const ns = parseGoDuration(t);
      if (ns === undefined) {
        r.problem(`${path}.timeout`, `${JSON.stringify(t)} is not a duration (Go syntax: "3s", "1m30s", "500ms")`);
      } else {
        timeoutNs = ns;
      }
    }
  }
  return {
    apiVersion,
    name,
    endpoint,
    timeout: timeoutNs / 1e6,
    timeoutText,
    ...(cachesize === undefined ? {} : { cachesize }),
  };
}

function freezeConfiguration(loose: LooseConfiguration): EncryptionConfiguration {
  const resources: ResourceConfiguration[] = loose.resources.map((entry) =>
    Object.freeze({
      resources: Object.freeze([...entry.resources]),
      providers: Object.freeze(entry.providers.map(freezeProvider)),
    }),
  );
  return Object.freeze({
    apiVersion: loose.apiVersion as EncryptionConfiguration['apiVersion'],
    kind: loose.kind as EncryptionConfiguration['kind'],
    resources: Object.freeze(resources),
  });
}

function freezeProvider(p: LooseProvider): ProviderConfiguration {
  if (p.aesgcm) return Object.freeze({ aesgcm: Object.freeze({ keys: Object.freeze(p.aesgcm.keys) }) });
  if (p.aescbc) return Object.freeze({ aescbc: Object.freeze({ keys: Object.freeze(p.aescbc.keys) }) });
  if (p.secretbox) {
    return Object.freeze({ secretbox: Object.freeze({ keys: Object.freeze(p.secretbox.keys) }) });
  }
  if (p.identity) return Object.freeze({ identity: Object.freeze({}) });
  const kms = p.kms as LooseKMSConfiguration;
  const typed: KMSConfiguration = {
    apiVersion: kms.apiVersion as KMSConfiguration['apiVersion'],
    name: kms.name,
    endpoint: kms.endpoint,
    timeout: kms.timeout,
    timeoutText: kms.timeoutText,
    ...(kms.cachesize === undefined ? {} : { cachesize: kms.cachesize }),
  };
  return Object.freeze({ kms: Object.freeze(typed) });
}
