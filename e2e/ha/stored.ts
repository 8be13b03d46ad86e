// Test harness: how values are stored in etcd (prefix, and kms v2 key_id), read from `etcdctl get -w
// json` output independently of the atrest tools under test. Prints and keeps no values.

import { EncryptedObject } from '../../src/proto/encrypted-object.js';

export interface StoredState {
  readonly key: string;
  /** `k8s:enc:aescbc:v1:key2:`, `k8s:enc:kms:v2:atrest:`, or `plaintext`. */
  readonly prefix: string;
  /** kms v2 only. */
  readonly keyID: string | undefined;
}

export function decodeStored(etcdctlJson: string): StoredState[] {
  const text = etcdctlJson.trim();
  const kvs =
    text === ''
      ? []
      : ((JSON.parse(text) as { kvs?: { key: string; value?: string }[] }).kvs ?? []);
  return kvs.map((kv) => {
    const key = Buffer.from(kv.key, 'base64').toString('utf8');
    const value = Buffer.from(kv.value ?? '', 'base64');
    if (value.subarray(0, 8).toString('latin1') !== 'k8s:enc:') {
      return { key, prefix: 'plaintext', keyID: undefined };
    }
    let at = -1;
    for (let i = 0; i < 5 && (at = value.indexOf(0x3a, at + 1)) >= 0; i++);
    const prefix = value.subarray(0, at + 1).toString('latin1');
    const keyID = prefix.startsWith('k8s:enc:kms:v2:')
      ? EncryptedObject.decode(value.subarray(at + 1)).keyID
      : undefined;
    return { key, prefix, keyID };
  });
}

/** "prefix keyID" -> count, over every value under `etcdPrefix`. */
export function storedSummary(states: readonly StoredState[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const s of states) {
    const k = s.keyID === undefined ? s.prefix : `${s.prefix} ${s.keyID}`;
    out[k] = (out[k] ?? 0) + 1;
  }
  return out;
}
