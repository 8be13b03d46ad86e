// The rules kube-apiserver applies to a decoded EncryptionConfiguration (its validator plus the checks
// it makes while building transformers), returned as a list of problems with field paths. Secrets are
// never echoed: problems about them say REDACTED.

import type { ConfigProblem } from '../errors.js';
import { parseGoUrlScheme } from './go-syntax.js';
import type { LooseConfiguration, LooseKMSConfiguration, LooseProvider } from './parse.js';
import { formatGroupResource, parseGroupResource } from './resolve.js';
import type { GroupResource } from './resolve.js';
import type { ConfigOptions, Key } from './types.js';

export const AES_KEY_SIZES: readonly number[] = [16, 24, 32];
export const SECRETBOX_KEY_SIZES: readonly number[] = [32];

/** Resources that have no REST API, so there is nothing to encrypt through the API server. */
const NON_REST_RESOURCES = new Set(['apiserveripinfo', 'serviceipallocations', 'servicenodeportallocations']);

export function validateEncryptionConfiguration(
  config: LooseConfiguration,
  options: ConfigOptions = {},
): ConfigProblem[] {
  const reload = options.reload ?? false;
  const kmsV1 = options.kmsV1 ?? true;
  const problems: ConfigProblem[] = [];
  const add = (path: string, message: string): void => {
    problems.push({ path, message });
  };

  if (config.resources.length === 0) {
    add('resources', 'at least one resource entry is required');
    return problems;
  }

  const kmsNames = new Set<string>();
  config.resources.forEach((entry, i) => {
    const r = `resources[${i}].resources`;
    const p = `resources[${i}].providers`;
    if (entry.resources.length === 0) add(r, 'at least one resource is required');
    problems.push(...validateResourceOverlap(entry.resources, r));
    problems.push(...validateResourceNames(entry.resources, r));
    if (entry.providers.length === 0) add(p, 'at least one provider is required');

    entry.providers.forEach((provider, j) => {
      const path = `${p}[${j}]`;
      const present = presentProviders(provider);
      if (present.length === 0) {
        add(path, 'no provider given: expected one of kms, aesgcm, aescbc, secretbox, identity');
      } else if (present.length > 1) {
        add(
          path,
          `more than one provider in a single element (${present.join(', ')}); give each its own list element`,
        );
      }
      // Upstream validates the first present member in this order only.
      if (provider.kms) {
        problems.push(...validateKms(provider.kms, `${path}.kms`, kmsNames, reload, kmsV1));
        kmsNames.add(provider.kms.name);
      } else if (provider.aesgcm) {
        problems.push(...validateKeys(provider.aesgcm.keys, `${path}.aesgcm.keys`, AES_KEY_SIZES));
      } else if (provider.aescbc) {
        problems.push(...validateKeys(provider.aescbc.keys, `${path}.aescbc.keys`, AES_KEY_SIZES));
      } else if (provider.secretbox) {
        problems.push(...validateKeys(provider.secretbox.keys, `${path}.secretbox.keys`, SECRETBOX_KEY_SIZES));
      }
    });
  });

  problems.push(...validateMasking(config));
  return problems;
}

function presentProviders(p: LooseProvider): string[] {
  const out: string[] = [];
  if (p.kms) out.push('kms');
  if (p.aesgcm) out.push('aesgcm');
  if (p.aescbc) out.push('aescbc');
  if (p.secretbox) out.push('secretbox');
  if (p.identity) out.push('identity');
  return out;
}

function sameGR(a: GroupResource, b: GroupResource): boolean {
  return a.group === b.group && a.resource === b.resource;
}

function validateResourceOverlap(resources: readonly string[], path: string): ConfigProblem[] {
  if (resources.length < 2) return [];
  const grs = resources.map(parseGroupResource);
  let duplicate = false;
  let overlap = false;
  grs.forEach((a, i) => {
    grs.forEach((b, j) => {
      if (i === j) return;
      if (sameGR(a, b)) {
        duplicate = true;
        return;
      }
      if (a.group === '*' && a.resource === '*') overlap = true;
      else if (a.group === b.group && (a.resource === '*' || b.resource === '*')) overlap = true;
    });
  });
  const out: ConfigProblem[] = [];
  if (duplicate) out.push({ path, message: 'the same resource cannot be listed more than once' });
  if (overlap) {
    out.push({
      path,
      message:
        "overlapping resources (such as 'secrets' and '*.') in the same list are not allowed: one would mask the other",
    });
  }
  return out;
}

function validateResourceNames(resources: readonly string[], path: string): ConfigProblem[] {
  const out: ConfigProblem[] = [];
  resources.forEach((res, j) => {
    const at = `${path}[${j}]`;
    const add = (message: string): void => {
      out.push({ path: at, message: `${JSON.stringify(res)}: ${message}` });
    };
    if (res.toLowerCase() !== res) return add('resource names must not contain capital letters');
    if (res === '*') return add("use '*.' for every resource of the core group or '*.*' for every resource");
    if (NON_REST_RESOURCES.has(res)) return add('resources without a REST API cannot be encrypted');
    const gr = parseGroupResource(res);
    if (gr.group === 'events.k8s.io') {
      return add("'events.k8s.io' objects are stored under the core 'events' resource in etcd: use 'events'");
    }
    if (gr.group === 'extensions') return add("the 'extensions' group has been removed and cannot be used");
    if (gr.group === '*' && gr.resource !== '*') {
      return add('encrypting the same resource across every group is not supported');
    }
    return undefined;
  });
  return out;
}

/** Standard base64 as Go's StdEncoding reads it: padding required, CR and LF ignored. */
export function decodeStdBase64(text: string): Buffer | undefined {
  const s = text.replace(/[\r\n]/g, '');
  if (s.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(s)) return undefined;
  return Buffer.from(s, 'base64');
}

function validateKeys(keys: readonly Key[], path: string, sizes: readonly number[]): ConfigProblem[] {
  if (keys.length === 0) return [{ path, message: 'at least one key is required' }];
  const out: ConfigProblem[] = [];
  keys.forEach((key, i) => {
    const at = `${path}[${i}]`;
    if (key.name === '') out.push({ path: `${at}.name`, message: 'a key needs a name' });
    if (key.secret === '') {
      out.push({ path: `${at}.secret`, message: 'a key needs a secret' });
      return;
    }
    const secret = decodeStdBase64(key.secret);
    if (secret === undefined) {
      out.push({ path: `${at}.secret`, message: 'REDACTED: secrets must be standard base64 (with padding)' });
      return;
    }
    if (!sizes.includes(secret.length)) {
      out.push({
        path: `${at}.secret`,
        message: `REDACTED: decodes to ${secret.length} bytes, expected one of [${sizes.join(' ')}]`,
      });
    }
    secret.fill(0);
  });
  return out;
}

function validateKms(
  kms: LooseKMSConfiguration,
  path: string,
  earlierNames: ReadonlySet<string>,
  reload: boolean,
  kmsV1Allowed: boolean,
): ConfigProblem[] {
  const out: ConfigProblem[] = [];
  const add = (field: string, message: string): void => {
    out.push({ path: `${path}.${field}`, message });
  };
  if (kms.name === '') add('name', 'a kms provider needs a name');
  if (kms.apiVersion !== 'v1' && kms.name.includes(':')) {
    add('name', `${JSON.stringify(kms.name)}: a kms v2 provider name must not contain ':'`);
  }
  if ((reload || kms.apiVersion !== 'v1') && earlierNames.has(kms.name)) {
    add('name', `${JSON.stringify(kms.name)}: duplicate kms provider name, names must be unique`);
  }
  if (Number.isNaN(kms.timeout) || kms.timeout <= 0) {
    add('timeout', `${JSON.stringify(kms.timeoutText)}: the timeout must be a positive duration`);
  }
  if (kms.endpoint === '') {
    add('endpoint', 'a kms provider needs an endpoint');
  } else {
    const url = parseGoUrlScheme(kms.endpoint);
    if ('error' in url) add('endpoint', `${JSON.stringify(kms.endpoint)}: not a valid URL (${url.error})`);
    else if (url.scheme !== 'unix') {
      add('endpoint', `unsupported scheme ${JSON.stringify(url.scheme)} for a kms provider, only unix is supported`);
    }
  }
  if (kms.apiVersion !== 'v1' && kms.cachesize !== undefined) add('cachesize', 'cachesize is not supported in v2');
  if (kms.apiVersion === 'v1' && kms.cachesize === 0) {
    add('cachesize', 'cachesize must be positive, or negative to disable the cache');
  }
  if (kms.apiVersion !== 'v1' && kms.apiVersion !== 'v2') {
    add('apiVersion', `unsupported kms apiVersion ${JSON.stringify(kms.apiVersion)}: only v1 and v2 are supported`);
  }
  if (kms.apiVersion === 'v1' && !kmsV1Allowed) {
    add(
      'apiVersion',
      'kms v1 is deprecated and disabled (the KMSv1 feature gate is off): use kms v2, or enable kms v1 explicitly',
    );
  }
  return out;
}

/**
 * Build-time rule across entries: once `*.<group>` or `*.*` has been configured, any later resource
 * it covers would never be used, so kube-apiserver refuses the file. The same exact resource in two
 * entries is fine (their providers are concatenated).
 */
function validateMasking(config: LooseConfiguration): ConfigProblem[] {
  const out: ConfigProblem[] = [];
  const seen = new Set<string>();
  const keyOf = (gr: GroupResource): string => `${gr.group}\u0000${gr.resource}`;
  config.resources.forEach((entry, i) => {
    entry.resources.forEach((res, j) => {
      const gr = parseGroupResource(res);
      const groupWildcard: GroupResource = { group: gr.group, resource: '*' };
      const anyWildcard: GroupResource = { group: '*', resource: '*' };
      const masking = seen.has(keyOf(groupWildcard)) ? groupWildcard : seen.has(keyOf(anyWildcard)) ? anyWildcard : undefined;
      if (masking !== undefined) {
        out.push({
          path: `resources[${i}].resources[${j}]`,
          message: `resource ${JSON.stringify(formatGroupResource(gr))} is masked by the earlier rule ${JSON.stringify(formatGroupResource(masking))}`,
        });
      }
      seen.add(keyOf(gr));
    });
  });
  return out;
}
