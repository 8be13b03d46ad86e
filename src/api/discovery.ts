// Resource discovery for the API tools: where the API server serves `resource` or `resource.group`
// (as EncryptionConfiguration names them), whether it is namespaced, and that it can be listed and
// patched.

import { AtrestError } from '../errors.js';
import { getJson, type ApiClient } from './api-client.js';

export interface ResourceInfo {
  readonly resource: string;
  /** `/api/v1` or `/apis/<group>/<version>` */
  readonly basePath: string;
  readonly plural: string;
  readonly namespaced: boolean;
}

const REQUIRED_VERBS = ['list', 'patch'];

export async function discover(client: ApiClient, resource: string): Promise<ResourceInfo> {
  const dot = resource.indexOf('.');
  const plural = dot < 0 ? resource : resource.slice(0, dot);
  const group = dot < 0 ? '' : resource.slice(dot + 1);
  const basePath = group === '' ? '/api/v1' : await preferredVersionPath(client, group);
  const list = (await getJson(client, basePath, basePath)) as {
    resources?: { name?: unknown; namespaced?: unknown; verbs?: unknown }[];
  };
  const entry = (list.resources ?? []).find((r) => r.name === plural);
  if (entry === undefined) {
    throw new AtrestError(
      'ERR_API',
      `the API server does not serve resource "${resource}" (${basePath})`,
    );
  }
  const verbs = Array.isArray(entry.verbs) ? entry.verbs : [];
  for (const verb of REQUIRED_VERBS) {
    if (!verbs.includes(verb)) {
      throw new AtrestError('ERR_API', `resource "${resource}" does not support "${verb}"`);
    }
  }
  return { resource, basePath, plural, namespaced: entry.namespaced === true };
}

/** `/apis/<group>/<preferred version>` */
async function preferredVersionPath(client: ApiClient, group: string): Promise<string> {
  const g = await getJson(client, `/apis/${group}`, `API group "${group}"`);
  const preferred = (g as { preferredVersion?: { groupVersion?: unknown } }).preferredVersion
    ?.groupVersion;
  if (typeof preferred !== 'string') {
    throw new AtrestError('ERR_API', `API group "${group}" has no preferred version`);
  }
  return `/apis/${preferred}`;
}
