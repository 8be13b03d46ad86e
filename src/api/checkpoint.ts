// The resume file of `rewrite --via-api`: which resources are finished and where the in-order
// completed prefix of the one in progress ends. Written atomically (temp file, fsync, rename: a crash
// leaves the old resume point or the new one, never a torn file) and validated when read back.

import { readFile } from 'node:fs/promises';
import { AtrestError } from '../errors.js';
import { writeJsonFileAtomic } from '../etcd/checkpoint.js';

const KIND = 'atrest-rewrite-via-api-checkpoint';

export interface ViaApiCheckpoint {
  readonly kind: typeof KIND;
  readonly version: 1;
  readonly resources: readonly string[];
  /** Resources finished completely. */
  readonly completed: readonly string[];
  /** The resource in progress and the last `namespace/name` (or `name`) of the completed prefix. */
  readonly current?: ViaApiPosition;
}

export interface ViaApiPosition {
  readonly resource: string;
  readonly after: string;
}

export function viaApiCheckpoint(
  resources: readonly string[],
  completed: readonly string[],
  current?: ViaApiPosition,
): ViaApiCheckpoint {
  return {
    kind: KIND,
    version: 1,
    resources,
    completed: [...completed],
    ...(current === undefined ? {} : { current }),
  };
}

export function writeViaApiCheckpoint(file: string, checkpoint: ViaApiCheckpoint): void {
  writeJsonFileAtomic(file, checkpoint);
}

/** The checkpoint in `file`, undefined if there is none; refused if it is for other resources. */
export async function readViaApiCheckpoint(
  file: string,
  resources: readonly string[],
): Promise<ViaApiCheckpoint | undefined> {
  const parsed = await readJson(file);
  if (parsed === undefined) return undefined;
  const c = parsed as Partial<ViaApiCheckpoint>;
  if (c.kind !== KIND || c.version !== 1 || !Array.isArray(c.resources)) {
    throw invalid(`the resume file ${file} is not an atrest rewrite checkpoint`);
  }
  if (c.resources.join(',') !== resources.join(',')) {
    throw invalid(
      `the resume file ${file} is for resources ${c.resources.join(',')}, not ${resources.join(',')}`,
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
  return viaApiCheckpoint(c.resources, completed, current);
}

async function readJson(file: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw invalid(`cannot read the resume file ${file}: ${(err as Error).message}`, err);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw invalid(`the resume file ${file} is not JSON`, err);
  }
}

function invalid(message: string, cause?: unknown): AtrestError {
  return new AtrestError('ERR_CHECKPOINT_INVALID', message, cause === undefined ? {} : { cause });
}
