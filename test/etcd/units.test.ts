// The pure parts of the etcd tools: key selection, classification against the write provider, the
// rate limiter, page prefetching, checkpoint validation and the progress line.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseEncryptionConfiguration } from '../../src/config/parse.js';
import { createSelection, storagePrefixes } from '../../src/etcd/selection.js';
import { createPolicyResolver, isCurrent, writeTargetOf } from '../../src/etcd/policy.js';
import { createRateLimiter } from '../../src/etcd/rate-limit.js';
import { createMemorySource } from '../../src/etcd/source.js';
import { forEachInPages, prefetched } from '../../src/paging.js';
import { readCheckpoint, writeCheckpoint, emptyCounts } from '../../src/etcd/checkpoint.js';
import { keyAfter, prefixRangeEnd, normaliseEndpoint } from '../../src/etcd/client.js';
import { planBatches, txnBytesOf } from '../../src/etcd/txn-batch.js';
import { createIdentityTransformer } from '../../src/transformers/identity.js';
import { formatProgress } from '../../src/cli/progress.js';

const KEY = Buffer.alloc(32, 7).toString('base64');
const config = parseEncryptionConfiguration(
  `apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets, services, deployments.apps]
    providers:
      - aesgcm: {keys: [{name: k2, secret: ${KEY}}, {name: k1, secret: ${KEY}}]}
      - kms: {apiVersion: v2, name: plug, endpoint: unix:///tmp/x.sock}
  - resources: [configmaps]
    providers:
      - identity: {}
`,
  'test.yaml',
);

describe('key selection', () => {
  test('maps resources to the paths kube-apiserver stores them under', () => {
    assert.deepEqual(storagePrefixes({ group: '', resource: 'services' }, '/registry/'), [
      '/registry/services/specs/',
    ]);
    assert.deepEqual(storagePrefixes({ group: '', resource: 'nodes' }, '/registry/'), ['/registry/minions/']);
    assert.deepEqual(storagePrefixes({ group: 'apps', resource: 'deployments' }, '/p/'), [
      '/p/deployments/',
      '/p/apps/deployments/',
    ]);
    assert.deepEqual(storagePrefixes({ group: 'example.com', resource: 'widgets' }, '/registry/'), [
      '/registry/example.com/widgets/',
    ]);
  });

  test('defaults to the resources the configuration names, as disjoint sorted ranges', () => {
    const s = createSelection({ etcdPrefix: 'registry', config });
    assert.equal(s.label, 'secrets,services,deployments.apps,configmaps');
    assert.deepEqual(
      s.ranges.map((r) => r.start.toString()),
      ['/registry/apps/deployments/', '/registry/configmaps/', '/registry/deployments/', '/registry/secrets/', '/registry/services/specs/'],
    );
    for (const r of s.ranges) assert.deepEqual(r.end, prefixRangeEnd(r.start));
  });

  test('walks the whole prefix for --all and for wildcards', () => {
    const all = createSelection({ etcdPrefix: '/registry', config, all: true });
    assert.deepEqual(all.ranges.map((r) => [r.start.toString(), r.end.toString()]), [['/registry/', '/registry0']]);
    const wild = createSelection({ etcdPrefix: '/registry', config, resources: ['*.apps'] });
    assert.equal(wild.ranges.length, 1);
  });
});

describe('classification against the write provider', () => {
  test('the first provider and its first key write', () => {
    assert.deepEqual(writeTargetOf(config.resources[0]!.providers), { format: 'aesgcm', keyName: 'k2' });
    assert.deepEqual(writeTargetOf(config.resources[1]!.providers), { format: 'identity' });
  });

  test('kms v2 values are current only with the current key_id and seed mode', () => {
    const w = { format: 'kms-v2' as const, kmsName: 'plug', keyID: 'a' };
    assert.equal(isCurrent({ format: 'kms-v2', kmsName: 'plug', keyID: 'a', dekSourceType: 1 }, w), true);
    assert.equal(isCurrent({ format: 'kms-v2', kmsName: 'plug', keyID: 'b', dekSourceType: 1 }, w), false);
    assert.equal(isCurrent({ format: 'kms-v2', kmsName: 'plug', keyID: 'a', dekSourceType: 0 }, w), false);
    assert.equal(isCurrent({ format: 'kms-v2', kmsName: 'plug', keyID: 'a', dekSourceType: 1 }, { format: 'kms-v2', kmsName: 'plug' }), undefined);
    assert.equal(isCurrent({ format: 'aesgcm', keyName: 'k1' }, { format: 'aesgcm', keyName: 'k2' }), false);
  });

  test('places keys, knows which providers read a shape, and never flags unplaceable keys', () => {
    const policies = createPolicyResolver(config, '/registry', { transformerFor: () => createIdentityTransformer() });
    const secrets = policies.forKey(Buffer.from('/registry/secrets/ns/a'));
    assert.equal(secrets.resource, 'secrets');
    assert.equal(secrets.mustEncrypt, true);
    assert.deepEqual(secrets.providers, ['aesgcm[k2,k1]', 'kms-v2/plug']);
    assert.equal(secrets.canRead({ format: 'aesgcm', keyName: 'k1' }), true);
    assert.equal(secrets.canRead({ format: 'aesgcm', keyName: 'k9' }), false);
    assert.equal(secrets.canRead({ format: 'kms-v2', kmsName: 'plug' }), true);
    assert.equal(secrets.canRead({ format: 'identity' }), false);
    assert.equal(policies.forKey(Buffer.from('/registry/services/specs/ns/a')).resource, 'services');
    const unknown = policies.forKey(Buffer.from('/registry/ranges/serviceips'));
    assert.equal(unknown.resource, '?/ranges');
    assert.equal(unknown.mustEncrypt, false);
  });
});

describe('small helpers', () => {
  test('the rate limiter spaces operations at the requested rate', async () => {
    let now = 0;
    const slept: number[] = [];
    const limiter = createRateLimiter(10, {
      now: () => now,
      sleep: async (ms) => {
        slept.push(ms);
        now += ms;
      },
      burst: 1,
    });
    for (let i = 0; i < 5; i++) await limiter.acquire();
    assert.equal(now, 400); // the first is free, then one every 100 ms
    assert.ok(slept.every((ms) => ms > 0));
  });

  test('prefetching yields every page in order', async () => {
    const kvs = Array.from({ length: 25 }, (_, i) => ({
      key: Buffer.from(`/k/${String(i).padStart(2, '0')}`),
      value: Buffer.alloc(0),
      createRevision: 1,
      modRevision: 1,
      version: 1,
    }));
    const src = createMemorySource(kvs);
    const seen: string[] = [];
    for await (const page of prefetched(src.pages(Buffer.from('/k/'), prefixRangeEnd(Buffer.from('/k/')), { pageSize: 10 }))) {
      seen.push(...page.map((kv) => kv.key.toString()));
    }
    assert.deepEqual(seen, kvs.map((kv) => kv.key.toString()));
  });

  test('work flows across page boundaries while pages complete strictly in order', async () => {
    async function* pages() {
      for (let p = 0; p < 5; p++) yield { items: Array.from({ length: p === 2 ? 0 : 4 }, (_, i) => p * 10 + i), tag: p };
    }
    const done: number[] = [];
    const seen: number[] = [];
    await forEachInPages(pages(), 3, async (n) => {
      // later items of a page finish first: completion order is scrambled
      await new Promise((r) => setTimeout(r, (n % 10 === 0 ? 20 : 1)));
      seen.push(n);
      return n * 2;
    }, (tag, items, results) => {
      done.push(tag);
      assert.deepEqual(results, items.map((n) => n * 2));
    });
    assert.deepEqual(done, [0, 1, 2, 3, 4]);
    assert.equal(seen.length, 16);
  });

  test('the first failure stops the work and no later page is reported done', async () => {
    async function* pages() {
      for (let p = 0; p < 4; p++) yield { items: [p * 10, p * 10 + 1], tag: p };
    }
    const done: number[] = [];
    await assert.rejects(
      forEachInPages(pages(), 2, async (n) => {
        if (n === 11) throw new Error('boom');
        return n;
      }, (tag) => done.push(tag)),
      /boom/,
    );
    assert.deepEqual(done, [0]);
  });

  test('batches are cut by key count and by bytes, in order; an item over the byte budget goes alone', () => {
    const limits = { maxKeys: 3, maxBytes: 100 };
    const size = (n: number): number => n;
    assert.deepEqual(planBatches([1, 2, 3, 4, 5, 6, 7], size, limits), [[1, 2, 3], [4, 5, 6], [7]]);
    assert.deepEqual(planBatches([60, 30, 20, 100, 150, 10], size, limits), [[60, 30], [20], [100], [150], [10]]);
    assert.deepEqual(planBatches([], size, limits), []);
    assert.throws(() => planBatches([1], size, { maxKeys: 0, maxBytes: 1 }), RangeError);
    // the request estimate counts the key three times (compare, put, range) and the value once
    assert.equal(txnBytesOf(Buffer.alloc(10), Buffer.alloc(1000)) - txnBytesOf(Buffer.alloc(0), Buffer.alloc(0)), 1030);
  });

  test('range arithmetic and endpoints', () => {
    assert.deepEqual(keyAfter(Buffer.from('a')), Buffer.from([0x61, 0]));
    assert.deepEqual(prefixRangeEnd(Buffer.from([0x61, 0xff])), Buffer.from([0x62]));
    assert.equal(normaliseEndpoint('10.0.0.1:2379/'), 'http://10.0.0.1:2379');
    assert.equal(normaliseEndpoint('https://etcd:2379'), 'https://etcd:2379');
  });

  test('a checkpoint round-trips and a foreign file is refused', () => {
    const dir = mkdtempSync(join(tmpdir(), 'atrest-ckpt-'));
    try {
      const path = join(dir, 'c.json');
      assert.equal(readCheckpoint(path), undefined);
      const c = {
        version: 1 as const,
        configHash: 'sha256:ab',
        etcdPrefix: '/registry/',
        selection: 'secrets',
        ranges: [{ start: '2f', lastKey: '2f61', complete: false }],
        counts: { ...emptyCounts(), rewritten: 3 },
        startedAt: 't0',
        updatedAt: 't1',
      };
      writeCheckpoint(path, c);
      assert.deepEqual(readCheckpoint(path), c);
      writeFileSync(path, '{"hello":1}');
      assert.throws(() => readCheckpoint(path), (e: Error & { code?: string }) => e.code === 'ERR_CHECKPOINT_INVALID');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('the progress line shows a bar, counts, percentage and rate', () => {
    assert.equal(formatProgress('rewrite', 50, 200, 25), 'rewrite [######..................] 50/200 25% 25/s');
    assert.equal(formatProgress('scanning', 7, 0, 0), 'scanning 7');
  });
});

describe('restore manifests and table labels', () => {
  test('restorableObject drops server-owned metadata, owner references and the last-applied annotation', async () => {
    const { restorableObject } = await import('../../src/etcd/restore.js');
    const r = restorableObject({
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: {
        name: 'db',
        namespace: 'prod',
        uid: 'u-1',
        resourceVersion: '42',
        creationTimestamp: '2026-01-01T00:00:00Z',
        managedFields: [{ manager: 'kubectl' }],
        ownerReferences: [{ uid: 'gone' }],
        labels: { app: 'db' },
        annotations: { 'kubectl.kubernetes.io/last-applied-configuration': '{"data":{}}', keep: 'me' },
      },
      data: { password: 'cHc=' },
      type: 'Opaque',
    });
    assert.ok(r.ok);
    assert.deepEqual(r.object, {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'db', namespace: 'prod', labels: { app: 'db' }, annotations: { keep: 'me' } },
      data: { password: 'cHc=' },
      type: 'Opaque',
    });
    const partial = restorableObject({ apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'x' }, rawSize: 100 });
    assert.equal(partial.ok, false);
  });

  test('table labels shorten long key ids to their last 8 characters and leave short ones', async () => {
    const { shortenKeyIds } = await import('../../src/cli/scan.js');
    assert.equal(shortenKeyIds('kms-v2/atrest key_id=k20261128T081107Z-0fc8e322e971566c'), 'kms-v2/atrest key_id=…e971566c');
    assert.equal(shortenKeyIds('kms-v2/atrest key_id=1'), 'kms-v2/atrest key_id=1');
    assert.equal(shortenKeyIds('aescbc/key1'), 'aescbc/key1');
  });
});

test('a resumed rewrite report keeps this run and all runs in separate columns', async () => {
  const { renderRewriteReport } = await import('../../src/cli/rewrite.js');
  const counts = { rewritten: 300, alreadyCurrent: 0, conflicts: 2, deleted: 0, skippedUndecryptable: 0, failed: 0 };
  const thisRun = { rewritten: 100, alreadyCurrent: 0, conflicts: 0, deleted: 0, skippedUndecryptable: 0, failed: 0 };
  const text = renderRewriteReport({
    dryRun: false,
    selection: 'secrets',
    resumed: true,
    preflight: { scanned: 100, toRewrite: 100, current: 0, undecryptable: 0 },
    counts,
    countsThisRun: thisRun,
    undecryptable: [],
    failures: [],
    converged: true,
  });
  assert.match(text, /^REWRITE\s+THIS RUN\s+ALL RUNS$/m);
  assert.match(text, /^values checked\s+100\s+-$/m);
  assert.match(text, /^rewritten \(read back and verified\)\s+100\s+300$/m);
  assert.doesNotMatch(text, /since the first run/);
});
