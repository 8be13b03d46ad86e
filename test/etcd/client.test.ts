import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { EtcdClient, prefixRangeEnd } from '../../src/etcd/client.js';
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
