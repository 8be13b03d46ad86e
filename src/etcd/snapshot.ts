// Reads the live key-values out of an etcd snapshot (`etcdctl snapshot save`) or a member's
// data file (`member/snap/db`) without running etcd: the disaster-recovery path, where the cluster is
// gone but the backup and the keys remain.
//
// etcd's MVCC store keeps every revision in the bbolt bucket "key":
//   bucket key   [main revision u64 BE]['_'][sub revision u64 BE]['t' if the key was deleted here]
//   bucket value mvccpb.KeyValue {1 key, 2 create_revision, 3 mod_revision, 4 version, 5 value, 6 lease}
// Keys are in revision order, so the newest revision of each etcd key wins; a tombstone deletes it.

import { FormatInvalidError } from '../errors.js';
import { defineMessage } from '../proto/wire.js';
import { BboltFile } from './bbolt.js';
import type { KeyValue } from './client.js';

const MVCC_BUCKET = 'key';
const REVISION_KEY_SIZE = 17;
const TOMBSTONE_MARK = 0x74; // 't'

/**
 * mvccpb.KeyValue. `lease` (field 6) is an int64 lease ID that routinely exceeds 2^53 (kube-apiserver
 * attaches leases to events); it is not declared here, so the codec skips it without converting it.
 * Revisions and versions stay far below 2^53.
 */
const MvccKeyValue = defineMessage('mvccpb.KeyValue', {
  key: { no: 1, kind: 'bytes' },
  create_revision: { no: 2, kind: 'enum' },
  mod_revision: { no: 3, kind: 'enum' },
  version: { no: 4, kind: 'enum' },
  value: { no: 5, kind: 'bytes' },
});

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
      const kv = MvccKeyValue.decode(value);
      if (options.filter && !options.filter(kv.key)) continue;
      const id = kv.key.toString('latin1');
      if (revKey.length === REVISION_KEY_SIZE + 1 && revKey[REVISION_KEY_SIZE] === TOMBSTONE_MARK) {
        latest.delete(id);
        continue;
      }
      latest.set(id, {
        key: kv.key,
        value: kv.value,
        createRevision: kv.create_revision,
        modRevision: kv.mod_revision,
        version: kv.version,
      });
    }
    return [...latest.values()].sort((a, b) => Buffer.compare(a.key, b.key));
  } finally {
    db.close();
  }
}
