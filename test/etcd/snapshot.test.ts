import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { request } from 'undici';
import { EtcdClient, prefixRangeEnd, type KeyValue } from '../../src/etcd/client.js';
import { readSnapshot } from '../../src/etcd/snapshot.js';
import { BboltFile } from '../../src/etcd/bbolt.js';
import { etcdBinary, startEtcd, type RunningEtcd } from '../helpers/etcd.js';

const enc = (s: string): Buffer => Buffer.from(s, 'utf8');

async function liveAll(client: EtcdClient): Promise<KeyValue[]> {
  const out: KeyValue[] = [];
  for await (const page of client.pages(Buffer.from([0]), Buffer.from([0]), { pageSize: 1000 })) out.push(...page);
  return out;
}

describe('etcd snapshot reader (bbolt, no etcd needed)', () => {
  let etcd: RunningEtcd;
  let client: EtcdClient;
  let snapshotFile: string;
  let expected: KeyValue[];

  before(async () => {
    etcd = await startEtcd();
    client = new EtcdClient({ endpoints: [etcd.endpoint] });
    // enough keys for branch pages, large values for overflow pages, binary values,
    // overwritten keys (several revisions) and deleted keys (tombstones)
    const puts: Promise<unknown>[] = [];
    for (let i = 0; i < 2500; i++) {
      puts.push(client.put(enc(`/registry/secrets/ns/s${String(i).padStart(5, '0')}`), randomBytes(100 + (i % 50))));
      if (puts.length >= 64) await Promise.all(puts.splice(0));
    }
    await Promise.all(puts);
    for (let i = 0; i < 20; i++) await client.put(enc(`/registry/configmaps/big/c${i}`), randomBytes(20_000 + i));
    for (let i = 0; i < 100; i++) await client.put(enc(`/registry/secrets/ns/s${String(i).padStart(5, '0')}`), enc(`rev2-${i}`));
    for (let i = 100; i < 150; i++) await client.delete(enc(`/registry/secrets/ns/s${String(i).padStart(5, '0')}`));
    await client.delete(enc('/registry/configmaps/big/c0'));
    await client.put(enc('/registry/configmaps/big/c0'), enc('recreated'));
    // keys attached to a lease (kube-apiserver does this for events): lease IDs are int64s above 2^53
    const grant = await request(`${etcd.endpoint}/v3/lease/grant`, { method: 'POST', body: JSON.stringify({ TTL: 3600 }) });
    const leaseId = ((await grant.body.json()) as { ID: string }).ID;
    assert.ok(BigInt(leaseId) > BigInt(Number.MAX_SAFE_INTEGER), `lease ID ${leaseId} exercises a large varint`);
    for (let i = 0; i < 3; i++) {
      const put = await request(`${etcd.endpoint}/v3/kv/put`, {
        method: 'POST',
        body: JSON.stringify({ key: enc(`/registry/events/ns/e${i}`).toString('base64'), value: enc(`event-${i}`).toString('base64'), lease: leaseId }),
      });
      assert.equal(put.statusCode, 200);
      await put.body.text();
    }
    expected = await liveAll(client);
    snapshotFile = join(etcd.dir, 'backup.db');
    execFileSync(etcdBinary('etcdctl'), ['--endpoints', etcd.endpoint, 'snapshot', 'save', snapshotFile], {
      stdio: 'ignore',
    });
  });
  after(async () => {
    await client?.close();
    await etcd?.stop();
  });

  test('returns exactly the live keys and values at the time of the snapshot', () => {
    const got = readSnapshot(snapshotFile);
    assert.equal(got.length, expected.length);
    assert.equal(got.length, 2500 - 50 + 20 + 3);
    for (let i = 0; i < got.length; i++) {
      assert.deepEqual(got[i]!.key, expected[i]!.key);
      assert.deepEqual(got[i]!.value, expected[i]!.value, `value of ${expected[i]!.key.toString()}`);
      assert.equal(got[i]!.modRevision, expected[i]!.modRevision);
      assert.equal(got[i]!.createRevision, expected[i]!.createRevision);
    }
    assert.equal(
      got.find((kv) => kv.key.toString() === '/registry/configmaps/big/c0')?.value.toString(),
      'recreated',
    );
    assert.equal(got.some((kv) => kv.key.toString() === '/registry/secrets/ns/s00120'), false);
  });

  test('keeps only the keys a filter accepts', () => {
    const prefix = enc('/registry/configmaps/');
    const end = prefixRangeEnd(prefix);
    const got = readSnapshot(snapshotFile, {
      filter: (k) => Buffer.compare(k, prefix) >= 0 && Buffer.compare(k, end) < 0,
    });
    assert.equal(got.length, 20);
    assert.ok(got.every((kv) => kv.key.toString().startsWith('/registry/configmaps/')));
  });

  test("reads a stopped member's own data file (member/snap/db) too", async () => {
    // SIGTERM lets etcd commit its backend; the live file has two independent meta pages and a freelist
    const exited = new Promise((r) => etcd.process.once('exit', r));
    etcd.process.kill('SIGTERM');
    await exited;
    const got = readSnapshot(join(etcd.dataDir, 'member', 'snap', 'db'));
    assert.equal(got.length, expected.length);
    for (let i = 0; i < got.length; i++) assert.deepEqual(got[i]!.value, expected[i]!.value);
  });

  test('refuses a file that is not a bbolt database with a clear error', () => {
    const bogus = join(etcd.dir, 'not-a-snapshot.db');
    writeFileSync(bogus, randomBytes(16384));
    assert.throws(() => readSnapshot(bogus), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'ERR_FORMAT_MALFORMED');
      assert.match(err.message, /no valid meta page/);
      return true;
    });
  });

  test('falls back to the other meta page when one is corrupted', () => {
    const copy = join(etcd.dir, 'one-bad-meta.db');
    const bytes = readFileSync(snapshotFile);
    const db = BboltFile.open(snapshotFile);
    const pageSize = db.pageSize;
    db.close();
    // damage the meta page with the higher txid: its checksum no longer matches
    const txid0 = bytes.readBigUInt64LE(16 + 48);
    const txid1 = bytes.readBigUInt64LE(pageSize + 16 + 48);
    const newer = txid0 > txid1 ? 0 : pageSize;
    bytes[newer + 16 + 20] = bytes[newer + 16 + 20]! ^ 0xff;
    writeFileSync(copy, bytes);
    // a snapshot is written in one transaction, so both metas describe readable trees
    assert.equal(readSnapshot(copy).length, expected.length);
  });
});
