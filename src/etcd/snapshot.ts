// Reads the live key-values out of an etcd snapshot (`etcdctl snapshot save`) or a member's
// data file (`member/snap/db`) without running etcd: the disaster-recovery path, where the cluster is
// gone but the backup and the keys remain.
//
// etcd's MVCC store keeps every revision in the bbolt bucket "key":
//   bucket key   [main revision u64 BE]['_'][sub revision u64 BE]['t' if the key was deleted here]
//   bucket value mvccpb.KeyValue {1 key, 2 create_revision, 3 mod_revision, 4 version, 5 value, 6 lease}
// Keys are in revision order, so the newest revision of each etcd key wins; a tombstone deletes it.

import { FormatInvalidError } from '../errors.js';
import { BboltFile } from './bbolt.js';
import type { KeyValue } from './client.js';

const MVCC_BUCKET = 'key';
const REVISION_KEY_SIZE = 17;
const TOMBSTONE_MARK = 0x74; // 't'

interface MvccKeyValue {
  key: Buffer;
  createRevision: number;
  modRevision: number;
  version: number;
  value: Buffer;
}

function malformed(message: string): FormatInvalidError {
  return new FormatInvalidError('ERR_FORMAT_MALFORMED', `etcd snapshot: ${message}`);
}

/**
 * mvccpb.KeyValue. Hand-decoded rather than with the shared proto3 codec: `lease` (field 6) is an
 * int64 lease ID that routinely exceeds 2^53 (kube-apiserver attaches leases to events), so its varint
 * is skipped without converting it to a number. Revisions and versions stay far below 2^53.
 */
function decodeKeyValue(buf: Buffer): MvccKeyValue {
  const out: MvccKeyValue = { key: Buffer.alloc(0), createRevision: 0, modRevision: 0, version: 0, value: Buffer.alloc(0) };
  let pos = 0;
  const varint = (): bigint => {
    let result = 0n;
    for (let shift = 0n; shift < 70n; shift += 7n) {
      if (pos >= buf.length) throw malformed('truncated varint');
      const b = buf[pos++]!;
      result |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return result;
    }
    throw malformed('varint longer than 10 bytes');
  };
  const small = (): number => {
    const v = varint();
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw malformed('revision out of range');
    return Number(v);
  };
  const bytes = (): Buffer => {
    const len = small();
    if (len > buf.length - pos) throw malformed('field runs past the end');
    const b = buf.subarray(pos, pos + len);
    pos += len;
    return b;
  };
  while (pos < buf.length) {
    const tag = small();
    const field = Math.floor(tag / 8);
    const wire = tag & 7;
    if (wire === 0) {
      if (field === 2) out.createRevision = small();
      else if (field === 3) out.modRevision = small();
      else if (field === 4) out.version = small();
      else varint();
    } else if (wire === 2) {
      const b = bytes();
      if (field === 1) out.key = b;
      else if (field === 5) out.value = b;
    } else if (wire === 1) {
      pos += 8;
    } else if (wire === 5) {
      pos += 4;
    } else {
      throw malformed(`unsupported wire type ${wire}`);
    }
    if (pos > buf.length) throw malformed('fixed-width field runs past the end');
  }
  return out;
}

export interface SnapshotReadOptions {
  /** Keep only keys for which this returns true (bounds memory to what the caller wants). */
  readonly filter?: (key: Buffer) => boolean;
}

/** The newest live value of every (matching) key in the snapshot, sorted by key. */
export function readSnapshot(path: string, options: SnapshotReadOptions = {}): KeyValue[] {
  const db = BboltFile.open(path);
  try {
    const latest = new Map<string, KeyValue>();
    for (const { key: revKey, value } of db.entries(MVCC_BUCKET)) {
      if (revKey.length !== REVISION_KEY_SIZE && revKey.length !== REVISION_KEY_SIZE + 1) {
        throw new FormatInvalidError(
          'ERR_FORMAT_MALFORMED',
          `etcd snapshot: unexpected revision key of ${revKey.length} bytes`,
        );
      }
      const kv = decodeKeyValue(value);
      if (options.filter && !options.filter(kv.key)) continue;
      const id = kv.key.toString('latin1');
      if (revKey.length === REVISION_KEY_SIZE + 1 && revKey[REVISION_KEY_SIZE] === TOMBSTONE_MARK) {
        latest.delete(id);
        continue;
      }
      latest.set(id, {
        key: kv.key,
        value: kv.value,
        createRevision: kv.createRevision,
        modRevision: kv.modRevision,
        version: kv.version,
      });
    }
    return [...latest.values()].sort((a, b) => Buffer.compare(a.key, b.key));
  } finally {
    db.close();
  }
}
