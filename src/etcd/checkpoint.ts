// The rewrite checkpoint: how far each key range has been rewritten, so `--resume FILE` continues
// after a crash (or kill -9) instead of starting over. Written atomically (temp file, fsync, rename)
// after each completed page; a page half-done at the crash is simply redone, which is harmless
// because values already written by the current provider are skipped.

import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { AtrestError } from '../errors.js';

export const CHECKPOINT_VERSION = 1;

export interface RangeProgress {
  /** The range's start key (hex), identifying it. */
  readonly start: string;
  /** Hex of the last key fully handled, or '' before the first page. */
  lastKey: string;
  /** True once the range has been walked to its end. */
  complete: boolean;
}

export interface CheckpointCounts {
  rewritten: number;
  alreadyCurrent: number;
  conflicts: number;
  deleted: number;
  skippedUndecryptable: number;
  failed: number;
}

export interface Checkpoint {
  readonly version: typeof CHECKPOINT_VERSION;
  /** sha256 of the encryption configuration file: a resume under another config is refused. */
  readonly configHash: string;
  readonly etcdPrefix: string;
  readonly selection: string;
  readonly ranges: RangeProgress[];
  readonly counts: CheckpointCounts;
  readonly startedAt: string;
  updatedAt: string;
}

export function emptyCounts(): CheckpointCounts {
  return { rewritten: 0, alreadyCurrent: 0, conflicts: 0, deleted: 0, skippedUndecryptable: 0, failed: 0 };
}

export function readCheckpoint(path: string): Checkpoint | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new AtrestError('ERR_CHECKPOINT_INVALID', `cannot read checkpoint ${path}: ${(err as Error).message}`, { cause: err });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (cause) {
    throw new AtrestError('ERR_CHECKPOINT_INVALID', `checkpoint ${path} is not valid JSON`, { cause });
  }
  const c = parsed as Partial<Checkpoint>;
  if (
    c.version !== CHECKPOINT_VERSION ||
    typeof c.configHash !== 'string' ||
    typeof c.etcdPrefix !== 'string' ||
    typeof c.selection !== 'string' ||
    !Array.isArray(c.ranges) ||
    typeof c.counts !== 'object' ||
    c.ranges.some((r) => typeof r?.start !== 'string' || typeof r?.lastKey !== 'string' || typeof r?.complete !== 'boolean')
  ) {
    throw new AtrestError('ERR_CHECKPOINT_INVALID', `checkpoint ${path} is not an atrest rewrite checkpoint (version ${CHECKPOINT_VERSION})`);
  }
  return { ...(c as Checkpoint), counts: { ...emptyCounts(), ...c.counts } };
}

export function writeCheckpoint(path: string, checkpoint: Checkpoint): void {
  writeJsonFileAtomic(path, checkpoint);
}

/**
 * Writes `value` as JSON so that a crash leaves either the old file or the new one, never a torn one:
 * a 0600 temp file beside it, fsync, rename. The resume files of both rewrites use it.
 */
export function writeJsonFileAtomic(path: string, value: unknown): void {
  const tmp = `${path}.tmp-${randomBytes(6).toString('hex')}`;
  const fd = openSync(tmp, 'w', 0o600);
  try {
    writeSync(fd, JSON.stringify(value, null, 2) + '\n');
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}
