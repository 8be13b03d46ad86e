import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { EtcdClient, prefixRangeEnd } from '../../src/etcd/client.js';
import { MAX_TXN_KEYS } from '../../src/etcd/txn-batch.js';
import { freePort, startEtcd, type RunningEtcd } from '../helpers/etcd.js';

const enc = (s: string): Buffer => Buffer.from(s, 'utf8');

describe('etcd client over the JSON gateway', () => {
  let etcd: RunningEtcd;
  let client: EtcdClient;

  before(async () => {
    etcd = await startEtcd();
    client = new EtcdClient({ endpoints: [etcd.endpoint] });
  });
  after(async () => {
    await client?.close();
    await etcd?.stop();
  });

  test('pages through a prefix returning every key exactly once, in key order', async () => {
    const keys: string[] = [];
    for (let i = 0; i < 1234; i++) keys.push(`/registry/secrets/ns${i % 7}/s${String(i).padStart(5, '0')}`);
    await Promise.all(keys.map((k) => client.put(enc(k), enc(`v-${k}`))));
    await client.put(enc('/registry/secretsX/other'), enc('outside'));
    const prefix = enc('/registry/secrets/');
    const seen: string[] = [];
    let pages = 0;
    for await (const page of client.pages(prefix, prefixRangeEnd(prefix), { pageSize: 100 })) {
      pages++;
      assert.ok(page.length <= 100);
      for (const kv of page) {
        seen.push(kv.key.toString());
        assert.equal(kv.value.toString(), `v-${kv.key.toString()}`);
        assert.ok(kv.modRevision > 0);
      }
    }
    assert.equal(pages, 13);
    assert.deepEqual(seen, [...keys].sort());
  });

  test('keeps binary values byte for byte', async () => {
    const value = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    await client.put(enc('/bin/all-bytes'), value);
    const kv = await client.get(enc('/bin/all-bytes'));
    assert.ok(kv);
    assert.deepEqual(kv.value, value);
  });

  test('compareAndPut writes only at the expected mod_revision and reads the value back', async () => {
    const key = enc('/cas/one');
    await client.put(key, enc('v1'));
    const v1 = await client.get(key);
    assert.ok(v1);
    const ok = await client.compareAndPut(key, enc('v2'), v1.modRevision);
    assert.equal(ok.succeeded, true);
    assert.equal(ok.current?.value.toString(), 'v2');
    assert.ok(ok.current!.modRevision > v1.modRevision);

    // a stale revision: nothing written, the current value is returned
    const stale = await client.compareAndPut(key, enc('v3'), v1.modRevision);
    assert.equal(stale.succeeded, false);
    assert.equal(stale.current?.value.toString(), 'v2');
    assert.equal((await client.get(key))?.value.toString(), 'v2');

    // a deleted key: nothing written, no current value
    await client.delete(key);
    const gone = await client.compareAndPut(key, enc('v4'), ok.current!.modRevision);
    assert.equal(gone.succeeded, false);
    assert.equal(gone.current, undefined);
    assert.equal(await client.get(key), undefined);
  });

  test('compareAndPutBatch writes every key or none, and returns each value read back or current', async () => {
    const keys = ['/batch/a', '/batch/b', '/batch/c'].map(enc);
    await Promise.all(keys.map((k, i) => client.put(k, enc(`v1-${i}`))));
    const read = await Promise.all(keys.map(async (k) => (await client.get(k))!));
    const ok = await client.compareAndPutBatch(keys.map((key, i) => ({ key, value: enc(`v2-${i}`), modRevision: read[i]!.modRevision })));
    assert.equal(ok.succeeded, true);
    assert.deepEqual(ok.current.map((kv) => kv?.value.toString()), ['v2-0', 'v2-1', 'v2-2']);
    assert.ok(ok.current.every((kv) => kv!.modRevision === ok.revision), 'all written by the one transaction');

    // b changed meanwhile and c is gone: nothing is written, each current value (or none) comes back in order
    await client.put(keys[1]!, enc('changed'));
    await client.delete(keys[2]!);
    const failed = await client.compareAndPutBatch(keys.map((key, i) => ({ key, value: enc(`v3-${i}`), modRevision: ok.current[i]!.modRevision })));
    assert.equal(failed.succeeded, false);
    assert.deepEqual(failed.current.map((kv) => kv?.value.toString()), ['v2-0', 'changed', undefined]);
    assert.equal(failed.current[0]!.modRevision, ok.current[0]!.modRevision);
    assert.equal((await client.get(keys[0]!))?.value.toString(), 'v2-0');
    assert.equal(await client.get(keys[2]!), undefined, 'a deleted key is not created again');
  });

  test(`etcd with default limits takes ${MAX_TXN_KEYS} keys in one compareAndPutBatch and refuses one more`, async () => {
    const items = [];
    for (let i = 0; i <= MAX_TXN_KEYS; i++) {
      const key = enc(`/batch-limit/k${String(i).padStart(3, '0')}`);
      const rev = await client.put(key, enc('old'));
      items.push({ key, value: enc('new'), modRevision: rev });
    }
    const full = await client.compareAndPutBatch(items.slice(0, MAX_TXN_KEYS));
    assert.equal(full.succeeded, true);
    assert.equal(full.current.length, MAX_TXN_KEYS);
    assert.ok(full.current.every((kv) => kv?.value.toString() === 'new'));
    await assert.rejects(client.compareAndPutBatch(items), /too many operations in txn request/);
  });

  test('fails over from an endpoint that refuses connections to one that answers', async () => {
    const dead = `http://127.0.0.1:${await freePort()}`;
    const c = new EtcdClient({ endpoints: [dead, etcd.endpoint] });
    try {
      await c.put(enc('/failover/k'), enc('v'));
      assert.equal((await c.get(enc('/failover/k')))?.value.toString(), 'v');
      const status = await c.status();
      assert.match(status.version, /^3\.6\./);
      assert.equal(status.endpoint, etcd.endpoint);
    } finally {
      await c.close();
    }
  });

  test('reports every endpoint when none answers', async () => {
    const c = new EtcdClient({ endpoints: [`127.0.0.1:${await freePort()}`] });
    try {
      await assert.rejects(c.get(enc('/x')), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'ERR_ETCD');
        assert.match(err.message, /no etcd endpoint reachable \(http:\/\/127\.0\.0\.1:\d+\)/);
        return true;
      });
    } finally {
      await c.close();
    }
  });
});

describe('etcd client with TLS', () => {
  let etcd: RunningEtcd;
  before(async () => {
    etcd = await startEtcd({ tls: true });
  });
  after(async () => {
    await etcd?.stop();
  });

  test('connects with a CA, a client certificate and its key', async () => {
    const tls = etcd.tls!;
    const c = new EtcdClient({ endpoints: [etcd.endpoint], tls: { ca: tls.ca, cert: tls.cert, key: tls.key } });
    try {
      await c.put(enc('/tls/k'), enc('secure'));
      assert.equal((await c.get(enc('/tls/k')))?.value.toString(), 'secure');
    } finally {
      await c.close();
    }
  });

  test('is refused without a client certificate', async () => {
    const c = new EtcdClient({ endpoints: [etcd.endpoint], tls: { ca: etcd.tls!.ca } });
    try {
      await assert.rejects(c.get(enc('/tls/k')), (err: Error & { code?: string }) => err.code === 'ERR_ETCD');
    } finally {
      await c.close();
    }
  });
});
