// `atrest rewrite --via-api`: the documented `kubectl get ... | kubectl replace -f -` storage migration,
// done through the API server only (kubeconfig auth via @kubernetes/client-node; no etcd access).
// Every object gets a JSON merge patch `{}`: it needs no resourceVersion, cannot conflict, and the API
// server writes it back only when the stored value is stale (read by a provider other than the current
// write provider, or a KMS v2 key_id/DEK that is no longer current), re-encrypting it. Lists and patch
// responses are requested as PartialObjectMetadata, so no Secret data ever reaches this process.

import { readFile, rm } from 'node:fs/promises';
import * as http from 'node:http';
import * as https from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import { AtrestError } from '../errors.js';
import type { Logger } from '../logger.js';
import { writeJsonFileAtomic } from '../etcd/checkpoint.js';
import { createRateLimiter } from '../etcd/rate-limit.js';

export interface RewriteViaApiOptions {
  /** Credentials and server, loaded by the caller (src/cli/kubeconfig.ts). */
  readonly kubeConfig: KubeConfig;
  /** `resource` or `resource.group`, as in EncryptionConfiguration: `secrets`, `configmaps`, `deployments.apps`. */
  readonly resources: readonly string[];
  /** Patches in flight at once (≥ 1). */
  readonly concurrency: number;
  /** Most patches started per second; 0 or absent = unlimited. */
  readonly rate?: number;
  /** Objects per list page (the API `limit`); default 500. */
  readonly pageSize?: number;
  /** Checkpoint file: read on start to skip what a previous run completed, updated while running. */
  readonly resumeFile?: string;
  /** Send every patch with `dryRun=All`: checks permissions and admission, persists nothing. */
  readonly dryRun: boolean;
  readonly onProgress?: (progress: RewriteViaApiProgress) => void;
  readonly logger: Logger;
  /** Stops dispatching new patches; in-flight ones finish, the checkpoint is written, the summary returned. */
  readonly signal?: AbortSignal;
}

export interface RewriteViaApiProgress {
  /** `page`: a list page arrived; `object`: one patch finished; `restart`: an expired list was restarted. */
  readonly event: 'page' | 'object' | 'restart';
  readonly resource: string;
  readonly listed: number;
  readonly patched: number;
  readonly failed: number;
}

export interface RewriteViaApiFailure {
  readonly resource: string;
  readonly namespace?: string;
  readonly name: string;
  /** HTTP status, 0 for a connection error. */
  readonly status: number;
  readonly reason: string;
}

export interface RewriteViaApiSummary {
  readonly resources: readonly string[];
  /** Objects returned by the list calls (skipped ones included). */
  readonly listed: number;
  /** Patches the API server accepted. */
  readonly patched: number;
  /** Of those, how many got a new resourceVersion: written back (stale), or changed by someone else meanwhile. */
  readonly rewritten: number;
  /** Objects deleted between the list and their patch. */
  readonly gone: number;
  /** Objects a previous run (resume file) or an earlier page of a restarted list had already done. */
  readonly skipped: number;
  /** Lists restarted because their continue token expired (410 Gone). */
  readonly restarts: number;
  readonly failed: readonly RewriteViaApiFailure[];
  readonly dryRun: boolean;
  readonly interrupted: boolean;
}

/** What the resume file holds: where the in-order completed prefix of the run ends. */
interface Checkpoint {
  readonly kind: 'atrest-rewrite-via-api-checkpoint';
  readonly version: 1;
  readonly resources: readonly string[];
  /** Resources finished completely. */
  readonly completed: readonly string[];
  /** The resource in progress and the last `namespace/name` (or `name`) of the completed prefix. */
  readonly current?: { readonly resource: string; readonly after: string };
}

interface ResourceInfo {
  readonly resource: string;
  /** `/api/v1` or `/apis/<group>/<version>` */
  readonly basePath: string;
  readonly plural: string;
  readonly namespaced: boolean;
}

interface ListedObject {
  readonly namespace?: string;
  readonly name: string;
  readonly resourceVersion: string;
  /** `namespace/name` or `name`: the order of the etcd keys, hence of every list. */
  readonly key: string;
}

interface HttpResult {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: Buffer;
}

const DEFAULT_PAGE_SIZE = 500;
const MAX_ATTEMPTS = 5;
const CHECKPOINT_INTERVAL_MS = 1000;
const METADATA_LIST_ACCEPT =
  'application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json';
const METADATA_ACCEPT =
  'application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json';

export async function runRewriteViaApi(
  options: RewriteViaApiOptions,
): Promise<RewriteViaApiSummary> {
  assertOptions(options);
  const { logger } = options;
  const client = await createApiClient(options);
  try {
    const checkpoint = options.resumeFile === undefined ? undefined : await readCheckpoint(options);
    const counters = { listed: 0, patched: 0, rewritten: 0, gone: 0, skipped: 0, restarts: 0 };
    const failed: RewriteViaApiFailure[] = [];
    const completed: string[] = [...(checkpoint?.completed ?? [])];
    const limiter = createRateLimiter(options.rate ?? 0);
    // Once anything fails, the checkpoint freezes before it, so a resumed run retries it.
    let frozen = false;
    let interrupted = false;

    // Writes are chained so concurrent workers never interleave two of them.
    let writing: Promise<void> = Promise.resolve();
    const saveCheckpoint = (current?: { resource: string; after: string }): Promise<void> => {
      const file = options.resumeFile;
      if (file === undefined || frozen) return writing;
      const snapshot: Checkpoint = {
        kind: 'atrest-rewrite-via-api-checkpoint',
        version: 1,
        resources: options.resources,
        completed: [...completed],
        ...(current === undefined ? {} : { current }),
      };
      writing = writing.then(() => writeCheckpoint(file, snapshot));
      return writing;
    };

    const infos: ResourceInfo[] = [];
    for (const resource of options.resources) infos.push(await discover(client, resource));

    for (const info of infos) {
      if (completed.includes(info.resource)) {
        logger.info('resource already completed by a previous run', { resource: info.resource });
        continue;
      }
      const resumeAfter =
        checkpoint?.current?.resource === info.resource ? checkpoint.current.after : undefined;
      let lastCheckpointAt = 0;
      let watermark: string | undefined = resumeAfter;

      const progress = (event: RewriteViaApiProgress['event']): void =>
        options.onProgress?.({
          event,
          resource: info.resource,
          listed: counters.listed,
          patched: counters.patched,
          failed: failed.length,
        });

      // Everything up to `dispatchedUpTo` has been handed to a patch (or skipped): a restarted list
      // resumes after it, as does a later run from the checkpoint's `after`.
      let dispatchedUpTo = resumeAfter;
      let continueToken: string | undefined;
      for (;;) {
        if (options.signal?.aborted) {
          interrupted = true;
          break;
        }
        const page = await listPage(
          client,
          info,
          options.pageSize ?? DEFAULT_PAGE_SIZE,
          continueToken,
        );
        if (page === 'expired') {
          counters.restarts++;
          logger.warn('list continue token expired; restarting the list', {
            resource: info.resource,
            after: dispatchedUpTo ?? '',
          });
          progress('restart');
          continueToken = undefined;
          continue;
        }
        counters.listed += page.items.length;
        progress('page');

        const todo: ListedObject[] = [];
        for (const item of page.items) {
          if (dispatchedUpTo !== undefined && compareKeys(item.key, dispatchedUpTo) <= 0) {
            counters.skipped++;
          } else {
            todo.push(item);
          }
        }

        // Patch the page with bounded concurrency; `done[i]` lets the watermark advance in list order.
        const done = new Array<boolean>(todo.length).fill(false);
        let next = 0;
        let doneUpTo = -1;
        const worker = async (): Promise<void> => {
          while (next < todo.length) {
            if (options.signal?.aborted) {
              interrupted = true;
              return;
            }
            const index = next++;
            const item = todo[index]!;
            await limiter.acquire();
            const outcome = await patchObject(client, info, item, options.dryRun);
            if (outcome.kind === 'patched') {
              counters.patched++;
              if (outcome.resourceVersion !== item.resourceVersion) counters.rewritten++;
            } else if (outcome.kind === 'gone') {
              counters.gone++;
            } else {
              frozen = true;
              failed.push({
                resource: info.resource,
                ...(item.namespace === undefined ? {} : { namespace: item.namespace }),
                name: item.name,
                status: outcome.status,
                reason: outcome.reason,
              });
              logger.warn('patch failed', {
                resource: info.resource,
                namespace: item.namespace ?? '',
                name: item.name,
                status: outcome.status,
                reason: outcome.reason,
              });
            }
            done[index] = true;
            while (doneUpTo + 1 < todo.length && done[doneUpTo + 1]) doneUpTo++;
            if (doneUpTo >= 0) watermark = todo[doneUpTo]!.key;
            progress('object');
            if (
              watermark !== undefined &&
              Date.now() - lastCheckpointAt >= CHECKPOINT_INTERVAL_MS
            ) {
              lastCheckpointAt = Date.now();
              await saveCheckpoint({ resource: info.resource, after: watermark });
            }
          }
        };
        await Promise.all(
          Array.from({ length: Math.min(options.concurrency, todo.length) }, worker),
        );
        if (doneUpTo >= 0) dispatchedUpTo = todo[doneUpTo]!.key;
        if (watermark !== undefined)
          await saveCheckpoint({ resource: info.resource, after: watermark });
        if (interrupted) break;
        if (page.continueToken === undefined) break;
        continueToken = page.continueToken;
      }
      if (interrupted) break;
      if (!frozen) completed.push(info.resource);
      await saveCheckpoint();
    }

    if (options.resumeFile !== undefined && !interrupted && failed.length === 0) {
      // A finished run leaves nothing to resume; the next run starts from the beginning.
      await rm(options.resumeFile, { force: true });
    }
    const summary: RewriteViaApiSummary = {
      resources: options.resources,
      ...counters,
      failed,
      dryRun: options.dryRun,
      interrupted,
    };
    logger.info('rewrite via API finished', {
      resources: options.resources.join(','),
      listed: summary.listed,
      patched: summary.patched,
      rewritten: summary.rewritten,
      gone: summary.gone,
      skipped: summary.skipped,
      restarts: summary.restarts,
      failed: failed.length,
      dryRun: options.dryRun,
      interrupted,
    });
    return summary;
  } finally {
    client.close();
  }
}

function assertOptions(options: RewriteViaApiOptions): void {
  if (options.resources.length === 0) throw new TypeError('resources must not be empty');
  if (!Number.isInteger(options.concurrency) || options.concurrency < 1) {
    throw new RangeError(`concurrency must be an integer ≥ 1, got ${options.concurrency}`);
  }
  if (options.rate !== undefined && !(Number.isFinite(options.rate) && options.rate >= 0)) {
    throw new RangeError(`rate must be a number ≥ 0, got ${options.rate}`);
  }
  const pageSize = options.pageSize ?? DEFAULT_PAGE_SIZE;
  if (!Number.isInteger(pageSize) || pageSize < 1) {
    throw new RangeError(`pageSize must be an integer ≥ 1, got ${pageSize}`);
  }
  for (const r of options.resources) {
    if (!/^[a-z0-9-]+(\.[a-z0-9.-]+)?$/.test(r)) {
      throw new TypeError(`resource "${r}" is not "resource" or "resource.group"`);
    }
  }
}

/** List order is etcd key order: byte order of `namespace/name` (names are ASCII). */
function compareKeys(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

// ---------------------------------------------------------------------------------------------
// The API client: kubeconfig credentials from @kubernetes/client-node, a keep-alive agent of our own.

interface ApiClient {
  request(
    method: string,
    path: string,
    headers: http.OutgoingHttpHeaders,
    body?: string,
  ): Promise<HttpResult>;
  close(): void;
}

async function createApiClient(options: RewriteViaApiOptions): Promise<ApiClient> {
  const kc = options.kubeConfig;
  const cluster = kc.getCurrentCluster();
  if (cluster === null) {
    throw new AtrestError('ERR_CONFIG_UNREADABLE', 'the kubeconfig has no current cluster');
  }
  const server = new URL(cluster.server);
  const secure = server.protocol === 'https:';
  // TLS material (ca, client cert, skip-verify, server name) once, for one pooled agent.
  const tls: https.RequestOptions = {};
  await kc.applyToHTTPSOptions(tls);
  const agentOptions = {
    keepAlive: true,
    maxSockets: options.concurrency + 1,
  };
  const agent = secure
    ? new https.Agent({
        ...agentOptions,
        ...(tls.ca === undefined ? {} : { ca: tls.ca }),
        ...(tls.cert === undefined ? {} : { cert: tls.cert }),
        ...(tls.key === undefined ? {} : { key: tls.key }),
        ...(tls.rejectUnauthorized === undefined
          ? {}
          : { rejectUnauthorized: tls.rejectUnauthorized }),
        ...(tls.servername === undefined ? {} : { servername: tls.servername }),
      })
    : new http.Agent(agentOptions);
  const prefix = server.pathname.replace(/\/$/, '');

  return {
    async request(method, path, headers, body) {
      // Credentials per request: exec plugins and token files may refresh.
      const auth: https.RequestOptions = { headers: {} };
      await kc.applyToHTTPSOptions(auth);
      const authHeaders: http.OutgoingHttpHeaders = {};
      const given = (auth.headers ?? {}) as http.OutgoingHttpHeaders;
      if (given['Authorization'] !== undefined)
        authHeaders['Authorization'] = given['Authorization'];
      if (auth.auth !== undefined && auth.auth !== null) {
        authHeaders['Authorization'] = `Basic ${Buffer.from(auth.auth).toString('base64')}`;
      }
      const url = new URL(prefix + path, server);
      return await new Promise<HttpResult>((resolve, reject) => {
        const req = (secure ? https : http).request(
          url,
          {
            method,
            agent,
            headers: {
              ...authHeaders,
              ...headers,
              'User-Agent': 'atrest-rewrite-via-api',
              ...(body === undefined ? {} : { 'Content-Length': Buffer.byteLength(body) }),
            },
            timeout: 60_000,
          },
          (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => chunks.push(c));
            res.on('end', () =>
              resolve({
                status: res.statusCode ?? 0,
                headers: res.headers,
                body: Buffer.concat(chunks),
              }),
            );
            res.on('error', reject);
          },
        );
        req.on('timeout', () => req.destroy(new Error(`${method} ${url.pathname} timed out`)));
        req.on('error', reject);
        req.end(body);
      });
    },
    close() {
      agent.destroy();
    },
  };
}

/** Status.message of an API error body, or the HTTP status text. Never echoes object data. */
function apiReason(result: HttpResult): string {
  try {
    const status = JSON.parse(result.body.toString('utf8')) as {
      message?: unknown;
      reason?: unknown;
    };
    if (typeof status.message === 'string') return status.message;
    if (typeof status.reason === 'string') return status.reason;
  } catch {
    // not a Status object
  }
  return http.STATUS_CODES[result.status] ?? `HTTP ${result.status}`;
}

async function discover(client: ApiClient, resource: string): Promise<ResourceInfo> {
  const dot = resource.indexOf('.');
  const plural = dot < 0 ? resource : resource.slice(0, dot);
  const group = dot < 0 ? '' : resource.slice(dot + 1);
  let basePath = '/api/v1';
  if (group !== '') {
    const g = await getJson(client, `/apis/${group}`, `API group "${group}"`);
    const preferred = (g as { preferredVersion?: { groupVersion?: unknown } }).preferredVersion
      ?.groupVersion;
    if (typeof preferred !== 'string') {
      throw new AtrestError('ERR_API', `API group "${group}" has no preferred version`);
    }
    basePath = `/apis/${preferred}`;
  }
  const list = (await getJson(client, basePath, `${basePath}`)) as {
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
  for (const verb of ['list', 'patch']) {
    if (!verbs.includes(verb)) {
      throw new AtrestError('ERR_API', `resource "${resource}" does not support "${verb}"`);
    }
  }
  return { resource, basePath, plural, namespaced: entry.namespaced === true };
}

async function getJson(client: ApiClient, path: string, what: string): Promise<unknown> {
  const res = await withRetries(() => client.request('GET', path, { Accept: 'application/json' }));
  if (res.status !== 200) {
    throw new AtrestError('ERR_API', `cannot read ${what}: ${res.status} ${apiReason(res)}`);
  }
  return JSON.parse(res.body.toString('utf8'));
}

async function listPage(
  client: ApiClient,
  info: ResourceInfo,
  limit: number,
  continueToken: string | undefined,
): Promise<{ items: ListedObject[]; continueToken?: string } | 'expired'> {
  const query = new URLSearchParams({ limit: String(limit) });
  if (continueToken !== undefined) query.set('continue', continueToken);
  const res = await withRetries(() =>
    client.request('GET', `${info.basePath}/${info.plural}?${query}`, {
      Accept: METADATA_LIST_ACCEPT,
    }),
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
  const items: ListedObject[] = [];
  for (const item of list.items ?? []) {
    const name = item.metadata?.name;
    const namespace = item.metadata?.namespace;
    if (typeof name !== 'string') continue;
    const ns = typeof namespace === 'string' && namespace !== '' ? namespace : undefined;
    items.push({
      name,
      ...(ns === undefined ? {} : { namespace: ns }),
      resourceVersion:
        typeof item.metadata?.resourceVersion === 'string' ? item.metadata.resourceVersion : '',
      key: ns === undefined ? name : `${ns}/${name}`,
    });
  }
  const next = list.metadata?.continue;
  return typeof next === 'string' && next !== '' ? { items, continueToken: next } : { items };
}

type PatchOutcome =
  | { kind: 'patched'; resourceVersion: string }
  | { kind: 'gone' }
  | { kind: 'failed'; status: number; reason: string };

async function patchObject(
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
    res = await withRetries(() =>
      client.request(
        'PATCH',
        path + query,
        { Accept: METADATA_ACCEPT, 'Content-Type': 'application/merge-patch+json' },
        '{}',
      ),
    );
  } catch (err) {
    return { kind: 'failed', status: 0, reason: messageOf(err) };
  }
  if (res.status === 404) return { kind: 'gone' };
  if (res.status !== 200) return { kind: 'failed', status: res.status, reason: apiReason(res) };
  let resourceVersion = '';
  try {
    const obj = JSON.parse(res.body.toString('utf8')) as {
      metadata?: { resourceVersion?: unknown };
    };
    if (typeof obj.metadata?.resourceVersion === 'string')
      resourceVersion = obj.metadata.resourceVersion;
  } catch {
    // an unparseable success body still means the patch was accepted
  }
  return { kind: 'patched', resourceVersion };
}

/**
 * Retries connection errors, 409 (the API server gave up its own conflict retries under heavy write
 * contention), 429 and 5xx with backoff, honouring Retry-After; returns the last result.
 */
async function withRetries(call: () => Promise<HttpResult>): Promise<HttpResult> {
  for (let attempt = 1; ; attempt++) {
    let result: HttpResult | undefined;
    let error: unknown;
    try {
      result = await call();
    } catch (err) {
      error = err;
    }
    const retriable =
      result === undefined ||
      result.status === 409 ||
      result.status === 429 ||
      result.status >= 500;
    if (!retriable || attempt >= MAX_ATTEMPTS) {
      if (result !== undefined) return result;
      throw error;
    }
    const retryAfter = Number(result?.headers['retry-after']);
    const delayMs =
      Number.isFinite(retryAfter) && retryAfter > 0
        ? Math.min(retryAfter, 30) * 1000
        : Math.min(200 * 2 ** (attempt - 1), 5000);
    await sleep(delayMs);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

// ---------------------------------------------------------------------------------------------
// The checkpoint file.

async function readCheckpoint(options: RewriteViaApiOptions): Promise<Checkpoint | undefined> {
  const file = options.resumeFile!;
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new AtrestError(
      'ERR_CHECKPOINT_INVALID',
      `cannot read the resume file ${file}: ${messageOf(err)}`,
      {
        cause: err,
      },
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new AtrestError('ERR_CHECKPOINT_INVALID', `the resume file ${file} is not JSON`, {
      cause: err,
    });
  }
  const c = parsed as Partial<Checkpoint>;
  if (
    c.kind !== 'atrest-rewrite-via-api-checkpoint' ||
    c.version !== 1 ||
    !Array.isArray(c.resources)
  ) {
    throw new AtrestError(
      'ERR_CHECKPOINT_INVALID',
      `the resume file ${file} is not an atrest rewrite checkpoint`,
    );
  }
  if (c.resources.join(',') !== options.resources.join(',')) {
    throw new AtrestError(
      'ERR_CHECKPOINT_INVALID',
      `the resume file ${file} is for resources ${c.resources.join(',')}, not ${options.resources.join(',')}`,
    );
  }
  const completed = Array.isArray(c.completed)
    ? c.completed.filter((r) => typeof r === 'string')
    : [];
  const current =
    c.current !== undefined &&
    typeof c.current.resource === 'string' &&
    typeof c.current.after === 'string'
      ? { resource: c.current.resource, after: c.current.after }
      : undefined;
  return {
    kind: 'atrest-rewrite-via-api-checkpoint',
    version: 1,
    resources: c.resources,
    completed,
    ...(current === undefined ? {} : { current }),
  };
}

async function writeCheckpoint(file: string, checkpoint: Checkpoint): Promise<void> {
  writeJsonFileAtomic(file, checkpoint);
}
