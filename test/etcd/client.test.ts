// EtcdClient against a real etcd over its native gRPC API: paging, binary data cross-checked with
// etcdctl both ways, conditional writes (one and batched), etcd's errors, failover, deadlines, the
// response size limit, and TLS with client certificates.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { readdirSync, readFileSync } from 'node:fs';
import { EtcdClient, prefixRangeEnd } from '../../src/etcd/client.js';
import { MAX_TXN_KEYS } from '../../src/etcd/txn-batch.js';
import { etcdBinary, freePort, startEtcd, type RunningEtcd } from '../helpers/etcd.js';

const enc = (s: string): Buffer => Buffer.from(s, 'utf8');

function etcdctl(etcd: RunningEtcd, args: readonly string[], input?: Buffer): string {
  const tls = etcd.tls ? [`--cacert=${etcd.tls.caFile}`, `--cert=${etcd.tls.certFile}`, `--key=${etcd.tls.keyFile}`] : [];
  return execFileSync(etcdBinary('etcdctl'), [`--endpoints=${etcd.endpoint}`, ...tls, ...args], {
    encoding: 'utf8',
    ...(input ? { input } : {}),
  });
}

interface EtcdctlKv {
  key: string;
  value?: string;
  create_revision: number;
  mod_revision: number;
  version: number;
}

/** `etcdctl get --prefix -w json`: keys and values in base64, as etcdctl decoded them from protobuf. */
function etcdctlGetPrefix(etcd: RunningEtcd, prefix: string): EtcdctlKv[] {
  return (JSON.parse(etcdctl(etcd, ['get', '--prefix', prefix, '-w', 'json'])) as { kvs?: EtcdctlKv[] }).kvs ?? [];
}

/** Stops a real etcd process (SIGSTOP) until the returned function resumes it: an endpoint that accepts connections and never answers. */
/**
 * Stops etcd (SIGSTOP) and returns once the kernel reports it stopped: kill() returns before the
 * signal is delivered, and a busy machine may let etcd answer one more request meanwhile.
 */
async function freeze(etcd: RunningEtcd): Promise<() => void> {
  etcd.process.kill('SIGSTOP');
  const tasks = `/proc/${etcd.process.pid}/task`;
  // field 3 of each thread's stat, after the parenthesised command name: T = stopped by a signal
  const state = (t: string): string | undefined => {
    try {
      return readFileSync(`${tasks}/${t}/stat`, 'utf8').split(') ')[1]?.[0];
    } catch {
      return 'T'; // a thread that exited meanwhile
    }
  };
  const stopped = (): boolean => readdirSync(tasks).every((t) => state(t) === 'T');
  while (!stopped()) await new Promise((r) => setImmediate(r));
  return () => {
    etcd.process.kill('SIGCONT');
  };
}

describe('etcd client over the native gRPC API', () => {
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

  test('what it writes etcdctl reads, byte for byte: binary keys, binary and empty values, revisions', async () => {
    const written = [
      { key: Buffer.concat([enc('/xcheck/a/'), Buffer.from([0x00, 0xff, 0x80, 0x0a])]), value: Buffer.from(Array.from({ length: 256 }, (_, i) => i)) },
      { key: enc('/xcheck/b/empty'), value: Buffer.alloc(0) },
      { key: enc('/xcheck/c/ünïcödé'), value: Buffer.alloc(70_000, 0xab) },
    ];
    for (const { key, value } of written) await client.put(key, value);
    const seen = etcdctlGetPrefix(etcd, '/xcheck/');
    assert.equal(seen.length, written.length);
    for (const [i, kv] of seen.entries()) {
      assert.deepEqual(Buffer.from(kv.key, 'base64'), written[i]!.key);
      assert.deepEqual(Buffer.from(kv.value ?? '', 'base64'), written[i]!.value);
      const ours = await client.get(written[i]!.key);
      assert.equal(ours?.modRevision, kv.mod_revision);
      assert.equal(ours?.createRevision, kv.create_revision);
      assert.equal(ours?.version, kv.version);
    }
  });

  test('what etcdctl writes it reads, byte for byte: a UTF-8 key, every byte value, an empty value', async () => {
    const value = Buffer.from(Array.from({ length: 512 }, (_, i) => (i * 7) % 256));
    etcdctl(etcd, ['put', '/ctl/ключ'], value); // the value from stdin
    etcdctl(etcd, ['put', '/ctl/empty', '']);
    const page = (await client.range(enc('/ctl/'), { rangeEnd: prefixRangeEnd(enc('/ctl/')) })).kvs;
    assert.deepEqual(
      page.map((kv) => kv.key.toString('utf8')),
      ['/ctl/empty', '/ctl/ключ'],
    );
    assert.equal(page[0]!.value.length, 0);
    assert.deepEqual(page[1]!.value, value);
    const count = await client.range(enc('/ctl/'), { rangeEnd: prefixRangeEnd(enc('/ctl/')), countOnly: true });
    assert.equal(count.count, 2);
    assert.equal(count.kvs.length, 0);
  });

  test('compareAndPutBatch writes every value or none, and reads each key back in the same transaction', async () => {
    const keys = [enc('/batch/a'), enc('/batch/b'), enc('/batch/c')];
    for (const k of keys) await client.put(k, enc('old'));
    const before = await Promise.all(keys.map((k) => client.get(k)));
    const items = keys.map((key, i) => ({ key, value: enc(`new-${i}`), modRevision: before[i]!.modRevision }));

    const ok = await client.compareAndPutBatch(items);
    assert.equal(ok.succeeded, true);
    assert.deepEqual(ok.current.map((kv) => kv?.value.toString()), ['new-0', 'new-1', 'new-2']);
    for (const kv of ok.current) assert.equal(kv!.modRevision, ok.revision);

    // one stale key: nothing is written, every current value comes back
    const again = keys.map((key, i) => ({ key, value: enc(`newer-${i}`), modRevision: ok.current[i]!.modRevision }));
    await client.put(keys[1]!, enc('changed-meanwhile'));
    const stale = await client.compareAndPutBatch(again);
    assert.equal(stale.succeeded, false);
    assert.deepEqual(stale.current.map((kv) => kv?.value.toString()), ['new-0', 'changed-meanwhile', 'new-2']);
    assert.deepEqual(
      (await Promise.all(keys.map((k) => client.get(k)))).map((kv) => kv?.value.toString()),
      ['new-0', 'changed-meanwhile', 'new-2'],
    );

    // a deleted key: nothing written, undefined in its place
    const current = await Promise.all(keys.map((k) => client.get(k)));
    await client.delete(keys[2]!);
    const gone = await client.compareAndPutBatch(keys.map((key, i) => ({ key, value: enc('x'), modRevision: current[i]!.modRevision })));
    assert.equal(gone.succeeded, false);
    assert.equal(gone.current[0]?.value.toString(), 'new-0');
    assert.equal(gone.current[2], undefined);
    assert.equal(await client.get(keys[2]!), undefined);
    assert.equal((await client.get(keys[0]!))?.value.toString(), 'new-0');
  });

  test("etcd's refusals become ERR_ETCD with etcd's words and what they mean", async () => {
    // 65 items = 130 operations on success: over etcd's default --max-txn-ops (128)
    const items = Array.from({ length: 65 }, (_, i) => ({ key: enc(`/many/${i}`), value: enc('v'), modRevision: 0 }));
    await assert.rejects(client.compareAndPutBatch(items), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'ERR_ETCD');
      assert.match(err.message, /Txn: etcdserver: too many operations in txn request \(.*--max-txn-ops/);
      return true;
    });
    // a read at a revision compaction removed
    await client.put(enc('/compact/k'), enc('1'));
    const old = (await client.get(enc('/compact/k')))!.modRevision;
    const now = await client.put(enc('/compact/k'), enc('2'));
    etcdctl(etcd, ['compact', String(now)]);
    await assert.rejects(client.range(enc('/compact/k'), { revision: old }), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'ERR_ETCD');
      assert.match(err.message, /Range: etcdserver: mvcc: required revision has been compacted/);
      return true;
    });
  });

  test('a response over the size limit is refused, and pages() reads it again in smaller pages', async () => {
    for (let i = 0; i < 40; i++) await client.put(enc(`/big/${String(i).padStart(2, '0')}`), Buffer.alloc(1000, i));
    const small = new EtcdClient({ endpoints: [etcd.endpoint], maxResponseBytes: 8 * 1024 });
    try {
      await assert.rejects(small.range(enc('/big/'), { rangeEnd: prefixRangeEnd(enc('/big/')) }), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'ERR_ETCD');
        assert.match(err.message, /response larger than 8192 bytes/);
        return true;
      });
      const sizes: number[] = [];
      for await (const page of small.pages(enc('/big/'), prefixRangeEnd(enc('/big/')), { pageSize: 40 })) sizes.push(page.length);
      assert.equal(sizes.reduce((a, b) => a + b, 0), 40);
      assert.ok(Math.max(...sizes) <= 8, `pages of ${sizes.join(',')}`);
      // one value larger than the limit cannot be read at all
      await client.put(enc('/huge/one'), Buffer.alloc(10_000));
      await assert.rejects(small.get(enc('/huge/one')), /response larger than 8192 bytes/);
    } finally {
      await small.close();
    }
  });

  test('pages sized by bytes: every key once, in order, pages growing from the first', async () => {
    const prefix = enc('/bytes/');
    for (let i = 0; i < 600; i++) await client.put(enc(`/bytes/${String(i).padStart(4, '0')}`), Buffer.alloc(100, 1));
    const sizes: number[] = [];
    const seen: string[] = [];
    for await (const page of client.pages(prefix, prefixRangeEnd(prefix), { pageSize: 10_000, pageBytes: 24_000 })) {
      sizes.push(page.length);
      for (const kv of page) seen.push(kv.key.toString());
    }
    assert.deepEqual(seen, Array.from({ length: 600 }, (_, i) => `/bytes/${String(i).padStart(4, '0')}`));
    assert.equal(sizes[0], 500); // the first page: value sizes not known yet
    assert.equal(sizes[1], 100); // the rest: as many ~110-byte values as fit 24,000 bytes, capped by what is left
  });

  test('more calls than streams: they wait their turn and all complete', async () => {
    const narrow = new EtcdClient({ endpoints: [etcd.endpoint], connections: 2 });
    try {
      const values = await Promise.all(Array.from({ length: 50 }, (_, i) => narrow.put(enc(`/narrow/${i}`), enc(String(i)))));
      assert.equal(new Set(values).size, 50);
      assert.equal((await narrow.range(enc('/narrow/'), { rangeEnd: prefixRangeEnd(enc('/narrow/')), countOnly: true })).count, 50);
    } finally {
      await narrow.close();
    }
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

  test('gives up on an endpoint that never answers after the deadline, and names it', async () => {
    const c = new EtcdClient({ endpoints: [etcd.endpoint], requestTimeoutMs: 300 });
    const resume = await freeze(etcd);
    try {
      await assert.rejects(c.get(enc('/frozen')), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'ERR_ETCD');
        assert.match(err.message, /no etcd endpoint reachable \(http:\/\/127\.0\.0\.1:\d+\): .*no answer within 300 ms/);
        return true;
      });
    } finally {
      resume();
      await c.close();
    }
    // etcd is back: a client that kept its connection through the pause still works
    await client.put(enc('/frozen'), enc('thawed'));
    assert.equal((await client.get(enc('/frozen')))?.value.toString(), 'thawed');
  });

  test('moves on to a second endpoint when the first stops answering (deadline) or goes away', async () => {
    const second = await startEtcd();
    const c = new EtcdClient({ endpoints: [etcd.endpoint, second.endpoint], requestTimeoutMs: 500 });
    try {
      await c.put(enc('/two/k'), enc('first'));
      assert.equal((await c.status()).endpoint, etcd.endpoint);
      const resume = await freeze(etcd);
      try {
        await c.put(enc('/two/k'), enc('second'));
        assert.equal((await c.status()).endpoint, second.endpoint);
      } finally {
        resume();
      }
      const v = etcdctlGetPrefix(second, '/two/');
      assert.equal(Buffer.from(v[0]!.value ?? '', 'base64').toString(), 'second');

      // and back: the second goes away for good (its connection is open), the first answers again.
      // (Not /two/k: the put that timed out on the paused member is still applied once it resumes.)
      await client.put(enc('/two/only-first'), enc('first'));
      const c2 = new EtcdClient({ endpoints: [second.endpoint, etcd.endpoint] });
      try {
        assert.equal(await c2.get(enc('/two/only-first')), undefined);
        assert.equal((await c2.status()).endpoint, second.endpoint);
        const exited = once(second.process, 'exit');
        await second.stop();
        await exited.catch(() => undefined);
        assert.equal((await c2.get(enc('/two/only-first')))?.value.toString(), 'first');
        assert.equal((await c2.status()).endpoint, etcd.endpoint);
      } finally {
        await c2.close();
      }
    } finally {
      await c.close();
      await second.stop();
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

  test('speaks gRPC over TLS (ALPN h2): conditional batches and status, and etcdctl reads what it wrote', async () => {
    const tls = etcd.tls!;
    const c = new EtcdClient({ endpoints: [etcd.endpoint], tls: { ca: tls.ca, cert: tls.cert, key: tls.key } });
    try {
      await c.put(enc('/tls/b'), Buffer.from([0, 1, 2]));
      const kv = (await c.get(enc('/tls/b')))!;
      const r = await c.compareAndPutBatch([{ key: enc('/tls/b'), value: Buffer.from([3, 4]), modRevision: kv.modRevision }]);
      assert.equal(r.succeeded, true);
      assert.match((await c.status()).version, /^3\./);
      const seen = etcdctlGetPrefix(etcd, '/tls/b');
      assert.deepEqual(Buffer.from(seen[0]!.value ?? '', 'base64'), Buffer.from([3, 4]));
    } finally {
      await c.close();
    }
  });

  test('refuses a server whose certificate the given CA did not sign', async () => {
    const other = await startEtcd({ tls: true }); // its own throwaway CA
    const c = new EtcdClient({ endpoints: [other.endpoint], tls: { ca: etcd.tls!.ca, cert: etcd.tls!.cert, key: etcd.tls!.key } });
    try {
      await assert.rejects(c.get(enc('/tls/k')), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'ERR_ETCD');
        assert.match(err.message, /certificate/i);
        return true;
      });
    } finally {
      await c.close();
      await other.stop();
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
