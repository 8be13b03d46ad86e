// Byte compatibility with kube-apiserver, both directions: for every local provider, values written by
// the upstream transformers (k8s.io/apiserver, via the Go oracle loading the same EncryptionConfiguration)
// read back in atrest, and values atrest writes read back upstream, with the same stale verdicts.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTransformers, parseEncryptionConfiguration, type BuiltTransformers } from '../../src/config/index.js';
import { startOracle, type Oracle } from './oracle.js';

const key = (fill: number, n = 32): string => Buffer.alloc(n, fill).toString('base64');

/** One resource per provider, so one file exercises them all. */
const PROVIDERS = [
  { provider: 'aescbc', gr: { group: '', resource: 'secrets' }, etcdKey: '/registry/secrets/default/s1', prefix: 'k8s:enc:aescbc:v1:k1:' },
  { provider: 'aesgcm', gr: { group: '', resource: 'configmaps' }, etcdKey: '/registry/configmaps/default/c1', prefix: 'k8s:enc:aesgcm:v1:k1:' },
  { provider: 'secretbox', gr: { group: 'awesome.bears.example', resource: 'pandas' }, etcdKey: '/registry/awesome.bears.example/pandas/ns/p1', prefix: 'k8s:enc:secretbox:v1:k1:' },
  { provider: 'identity', gr: { group: 'apps', resource: 'deployments' }, etcdKey: '/registry/deployments/default/web', prefix: '' },
] as const;

function configText(order: 'current' | 'rotated'): string {
  // "rotated": the second key writes, as after a key rotation; values written with k1 are then stale.
  const keys = (n: number) =>
    order === 'current'
      ? `[{name: k1, secret: "${key(1, n)}"}, {name: k2, secret: "${key(2, n)}"}]`
      : `[{name: k2, secret: "${key(2, n)}"}, {name: k1, secret: "${key(1, n)}"}]`;
  return `apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - aescbc: {keys: ${keys(32)}}
      - identity: {}
  - resources: [configmaps]
    providers:
      - aesgcm: {keys: ${keys(16)}}
      - identity: {}
  - resources: [pandas.awesome.bears.example]
    providers:
      - secretbox: {keys: ${keys(32)}}
  - resources: ['*.apps']
    providers:
      - identity: {}
      - aesgcm: {keys: ${keys(32)}}
`;
}

const SIZES = [0, 1, 15, 16, 17, 1024, 64 * 1024];
const ctx = (k: string) => ({ authenticatedData: Buffer.from(k) });

describe('storage transformers are byte-compatible with kube-apiserver (k8s.io/apiserver)', () => {
  let dir: string;
  let oracle: Oracle;
  let rotated: Oracle;
  let ours: BuiltTransformers;
  let oursRotated: BuiltTransformers;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'atrest-transform-parity-'));
    const current = join(dir, 'current.yaml');
    const rotatedPath = join(dir, 'rotated.yaml');
    writeFileSync(current, configText('current'));
    writeFileSync(rotatedPath, configText('rotated'));
    oracle = startOracle();
    rotated = startOracle();
    const a = await oracle.load(current, { keep: true });
    const b = await rotated.load(rotatedPath, { keep: true });
    assert.ok(a.ok && b.ok, `oracle refused the config: ${a.error ?? b.error}`);
    ours = buildTransformers(parseEncryptionConfiguration(configText('current'), current));
    oursRotated = buildTransformers(parseEncryptionConfiguration(configText('rotated'), rotatedPath));
  });

  after(async () => {
    await Promise.all([oracle?.close(), rotated?.close(), ours?.close(), oursRotated?.close()]);
    rmSync(dir, { recursive: true, force: true });
  });

  for (const p of PROVIDERS) {
    it(`reads ${p.provider} values written by kube-apiserver, every size`, async () => {
      for (const size of SIZES) {
        const plain = randomBytes(size);
        const stored = await oracle.toStorage(p.gr, p.etcdKey, plain);
        assert.ok(stored.subarray(0, p.prefix.length).equals(Buffer.from(p.prefix)), `prefix of ${size}`);
        const read = await ours.transformerFor(p.gr).transformFromStorage(stored, ctx(p.etcdKey));
        assert.ok(read.data.equals(plain), `${p.provider} ${size} B`);
        assert.equal(read.stale, false);
      }
    });

    it(`writes ${p.provider} values kube-apiserver reads, every size`, async () => {
      for (const size of SIZES) {
        const plain = randomBytes(size);
        const stored = await ours.transformerFor(p.gr).transformToStorage(plain, ctx(p.etcdKey));
        assert.ok(stored.subarray(0, p.prefix.length).equals(Buffer.from(p.prefix)), `prefix of ${size}`);
        const read = await oracle.fromStorage(p.gr, p.etcdKey, stored);
        assert.ok(read.data.equals(plain), `${p.provider} ${size} B`);
        assert.equal(read.stale, false);
      }
    });
  }

  for (const p of PROVIDERS.filter((x) => x.provider !== 'identity')) {
    it(`agrees that ${p.provider} values under the old key are stale after a rotation, both directions`, async () => {
      const plain = randomBytes(100);
      const byGo = await oracle.toStorage(p.gr, p.etcdKey, plain);
      const r1 = await oursRotated.transformerFor(p.gr).transformFromStorage(byGo, ctx(p.etcdKey));
      assert.ok(r1.data.equals(plain));
      assert.equal(r1.stale, true);
      const byUs = await ours.transformerFor(p.gr).transformToStorage(plain, ctx(p.etcdKey));
      const r2 = await rotated.fromStorage(p.gr, p.etcdKey, byUs);
      assert.ok(r2.data.equals(plain));
      assert.equal(r2.stale, true);
    });
  }

  it('agrees that plaintext under an identity-last rule reads as stale', async () => {
    const gr = { group: '', resource: 'secrets' };
    const plain = Buffer.from('k8s\u0000plain protobuf value');
    const theirs = await oracle.fromStorage(gr, '/registry/secrets/a/b', plain);
    const mine = await ours.transformerFor(gr).transformFromStorage(plain, ctx('/registry/secrets/a/b'));
    assert.deepEqual({ data: mine.data, stale: mine.stale }, { data: theirs.data, stale: theirs.stale });
    assert.equal(mine.stale, true);
  });

  it('agrees that encrypted data under an identity-first rule is read by the later provider and is stale', async () => {
    const gr = { group: 'apps', resource: 'statefulsets' };
    const k = '/registry/statefulsets/default/db';
    const plain = randomBytes(64);
    const cfg = `apiVersion: v1\nkind: EncryptionConfig\nresources:\n  - resources: ['*.apps']\n    providers:\n      - aesgcm: {keys: [{name: k1, secret: "${key(1)}"}]}\n`;
    const writer = buildTransformers(parseEncryptionConfiguration(cfg, 'w.yaml'));
    const stored = await writer.transformerFor(gr).transformToStorage(plain, ctx(k));
    const theirs = await oracle.fromStorage(gr, k, stored);
    const mine = await ours.transformerFor(gr).transformFromStorage(stored, ctx(k));
    assert.ok(theirs.data.equals(plain) && mine.data.equals(plain));
    assert.equal(theirs.stale, true);
    assert.equal(mine.stale, true);
  });

  it('both refuse an aesgcm value moved to another etcd key (authenticated data)', async () => {
    const gr = { group: '', resource: 'configmaps' };
    const stored = await oracle.toStorage(gr, '/registry/configmaps/a/one', Buffer.from('value'));
    await assert.rejects(ours.transformerFor(gr).transformFromStorage(stored, ctx('/registry/configmaps/a/two')));
    await assert.rejects(oracle.fromStorage(gr, '/registry/configmaps/a/two', stored));
  });

  it('both refuse encrypted data for a resource no rule covers', async () => {
    const gr = { group: 'batch', resource: 'jobs' };
    const stored = await ours.transformerFor({ group: '', resource: 'secrets' }).transformToStorage(Buffer.from('v'), ctx('/k'));
    await assert.rejects(ours.transformerFor(gr).transformFromStorage(stored, ctx('/k')));
    await assert.rejects(oracle.fromStorage(gr, '/k', stored));
    const plain = await oracle.fromStorage(gr, '/k', Buffer.from('{}'));
    assert.deepEqual(await ours.transformerFor(gr).transformFromStorage(Buffer.from('{}'), ctx('/k')), {
      data: plain.data,
      stale: plain.stale,
    });
  });
});
