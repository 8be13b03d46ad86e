// `atrest rewrite --via-api`: the documented `kubectl get ... | kubectl replace -f -` storage migration,
// done through the API server only (kubeconfig auth via @kubernetes/client-node; no etcd access).
// Every object gets a JSON merge patch `{}`: it needs no resourceVersion, cannot conflict, and the API
// server writes it back only when the stored value is stale (read by a provider other than the current
// write provider, or a KMS v2 key_id/DEK that is no longer current), re-encrypting it. Lists and patch
// responses are requested as PartialObjectMetadata, so no Secret data ever reaches this process.
//
// This file is the orchestrator: per resource, the list pages feed the shared paging pool
// (src/paging.ts) and the checkpoint follows its in-order low-water mark. The pieces: api-client.ts
// (HTTP, credentials, retries), discovery.ts, objects.ts (list and patch), checkpoint.ts.

import { rm } from 'node:fs/promises';
import type { KubeConfig } from '@kubernetes/client-node';
import type { Logger } from '../logger.js';
import { createRateLimiter, type RateLimiter } from '../etcd/rate-limit.js';
import { forEachInPages, type WorkPage } from '../paging.js';
import { createApiClient, type ApiClient } from './api-client.js';
import {
  readViaApiCheckpoint,
  viaApiCheckpoint,
  writeViaApiCheckpoint,
  type ViaApiPosition,
} from './checkpoint.js';
import { discover, type ResourceInfo } from './discovery.js';
import { compareKeys, listPage, patchObject, type ListedObject } from './objects.js';

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

/** The state of one run, shared by the resources it walks. */
interface Run {
  readonly options: RewriteViaApiOptions;
  readonly client: ApiClient;
  readonly limiter: RateLimiter;
  readonly counters: {
    listed: number;
    patched: number;
    rewritten: number;
    gone: number;
    skipped: number;
    restarts: number;
  };
  readonly failed: RewriteViaApiFailure[];
  /** Resources finished completely (by this run or a previous one). */
  readonly completed: string[];
  /** Once anything fails, the checkpoint freezes before it, so a resumed run retries it. */
  frozen: boolean;
}

type Progress = (event: RewriteViaApiProgress['event']) => void;

const DEFAULT_PAGE_SIZE = 500;
const CHECKPOINT_INTERVAL_MS = 1000;

export async function runRewriteViaApi(
  options: RewriteViaApiOptions,
): Promise<RewriteViaApiSummary> {
  assertOptions(options);
  const client = await createApiClient(options.kubeConfig, options.concurrency + 1);
  try {
    const checkpoint =
      options.resumeFile === undefined
        ? undefined
        : await readViaApiCheckpoint(options.resumeFile, options.resources);
    const run: Run = {
      options,
      client,
      limiter: createRateLimiter(options.rate ?? 0),
      counters: { listed: 0, patched: 0, rewritten: 0, gone: 0, skipped: 0, restarts: 0 },
      failed: [],
      completed: [...(checkpoint?.completed ?? [])],
      frozen: false,
    };
    const infos: ResourceInfo[] = [];
    for (const resource of options.resources) infos.push(await discover(client, resource));

    let interrupted = false;
    for (const info of infos) {
      if (run.completed.includes(info.resource)) {
        options.logger.info('resource already completed by a previous run', {
          resource: info.resource,
        });
        continue;
      }
      const current = checkpoint?.current;
      const resumeAfter = current?.resource === info.resource ? current.after : undefined;
      if (!(await rewriteResource(run, info, resumeAfter))) {
        interrupted = true;
        break;
      }
      if (!run.frozen) run.completed.push(info.resource);
      saveCheckpoint(run);
    }
    if (options.resumeFile !== undefined && !interrupted && run.failed.length === 0) {
      // A finished run leaves nothing to resume; the next run starts from the beginning.
      await rm(options.resumeFile, { force: true });
    }
    return summarize(run, interrupted);
  } finally {
    client.close();
  }
}

/**
 * Patches every object of one resource listed after `resumeAfter`, `concurrency` at a time across
 * page boundaries. Resolves true when the resource is done, false when the signal interrupted it.
 */
async function rewriteResource(
  run: Run,
  info: ResourceInfo,
  resumeAfter: string | undefined,
): Promise<boolean> {
  const { options, counters } = run;
  const progress: Progress = (event) =>
    options.onProgress?.({
      event,
      resource: info.resource,
      listed: counters.listed,
      patched: counters.patched,
      failed: run.failed.length,
    });
  // The end of the in-order completed prefix: what a checkpoint may claim.
  let watermark = resumeAfter;
  let lastCheckpointAt = 0;
  const save = (): void => {
    if (watermark !== undefined) saveCheckpoint(run, { resource: info.resource, after: watermark });
  };
  const listing = { interrupted: false };
  const finished = await forEachInPages(
    objectPages(run, info, resumeAfter, progress, listing),
    options.concurrency,
    async (item) => {
      await patchAndCount(run, info, item);
      progress('object');
    },
    save,
    {
      ...(options.signal === undefined ? {} : { signal: options.signal }),
      onItemDone: (item) => {
        watermark = item.key;
        if (Date.now() - lastCheckpointAt < CHECKPOINT_INTERVAL_MS) return;
        lastCheckpointAt = Date.now();
        save();
      },
    },
  );
  save();
  return finished && !listing.interrupted;
}

/**
 * The list of one resource as work pages, fetched one page ahead. An expired list (410 Gone) starts
 * over and skips what was already handed out, as does a resumed run (after `resumeAfter`).
 */
async function* objectPages(
  run: Run,
  info: ResourceInfo,
  resumeAfter: string | undefined,
  progress: Progress,
  listing: { interrupted: boolean },
): AsyncGenerator<WorkPage<ListedObject, undefined>> {
  const { options, counters } = run;
  const { signal } = options;
  let handedOut = resumeAfter;
  let continueToken: string | undefined;
  for (;;) {
    let page: Awaited<ReturnType<typeof listPage>>;
    try {
      signal?.throwIfAborted();
      const size = options.pageSize ?? DEFAULT_PAGE_SIZE;
      page = await listPage(run.client, info, size, continueToken, signal);
    } catch (err) {
      if (signal?.aborted !== true) throw err;
      listing.interrupted = true;
      return;
    }
    if (page === 'expired') {
      counters.restarts++;
      options.logger.warn('list continue token expired; restarting the list', {
        resource: info.resource,
        after: handedOut ?? '',
      });
      progress('restart');
      continueToken = undefined;
      continue;
    }
    counters.listed += page.items.length;
    progress('page');
    const after = handedOut;
    const todo = page.items.filter((o) => after === undefined || compareKeys(o.key, after) > 0);
    counters.skipped += page.items.length - todo.length;
    if (todo.length > 0) handedOut = todo[todo.length - 1]!.key;
    yield { items: todo, tag: undefined };
    if (page.continueToken === undefined) return;
    continueToken = page.continueToken;
  }
}

async function patchAndCount(run: Run, info: ResourceInfo, item: ListedObject): Promise<void> {
  const { counters } = run;
  await run.limiter.acquire();
  const outcome = await patchObject(run.client, info, item, run.options.dryRun);
  if (outcome.kind === 'patched') {
    counters.patched++;
    if (outcome.resourceVersion !== item.resourceVersion) counters.rewritten++;
    return;
  }
  if (outcome.kind === 'gone') {
    counters.gone++;
    return;
  }
  run.frozen = true;
  const where = item.namespace === undefined ? {} : { namespace: item.namespace };
  const { status, reason } = outcome;
  run.failed.push({ resource: info.resource, ...where, name: item.name, status, reason });
  run.options.logger.warn('patch failed', {
    resource: info.resource,
    namespace: item.namespace ?? '',
    name: item.name,
    status,
    reason,
  });
}

function saveCheckpoint(run: Run, current?: ViaApiPosition): void {
  const file = run.options.resumeFile;
  if (file === undefined || run.frozen) return;
  writeViaApiCheckpoint(file, viaApiCheckpoint(run.options.resources, run.completed, current));
}

function summarize(run: Run, interrupted: boolean): RewriteViaApiSummary {
  const { options, counters, failed } = run;
  const summary: RewriteViaApiSummary = {
    resources: options.resources,
    ...counters,
    failed,
    dryRun: options.dryRun,
    interrupted,
  };
  options.logger.info('rewrite via API finished', {
    resources: options.resources.join(','),
    ...counters,
    failed: failed.length,
    dryRun: options.dryRun,
    interrupted,
  });
  return summary;
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
