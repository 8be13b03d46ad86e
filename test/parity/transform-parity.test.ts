// Byte compatibility with kube-apiserver, both directions, for every provider: values written by the
// upstream transformers (k8s.io/apiserver, via the Go oracle loading the same EncryptionConfiguration)
// read back in atrest, and values atrest writes read back upstream, with the same stale verdicts. kms v1
// and kms v2 go through ONE running atrest plugin (`atrest serve`, keyring backend), which both sides'
// own gRPC clients (grpc-go upstream, src/kms-client here) talk to.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildTransformers, parseEncryptionConfiguration, type BuiltTransformers } from '../../src/config/index.js';
import { createKmsV1Client, createKmsV2Client } from '../../src/kms-client/index.js';
import { describeStoredValue } from '../../src/transformers/describe.js';
import { createKmsV1Transformer } from '../../src/transformers/kms-v1.js';
import { createPrefixTransformers } from '../../src/transformers/prefix.js';
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

describe('resource resolution matches kube-apiserver (exact, then *.<group>, then *.*)', () => {
  let dir: string;
  let oracle: Oracle;
  const text = `apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets, deployments.apps]
    providers: [{aescbc: {keys: [{name: exact, secret: "${key(1)}"}]}}]
  - resources: [secrets]
    providers: [{identity: {}}]
  - resources: ['*.']
    providers: [{aesgcm: {keys: [{name: core, secret: "${key(2)}"}]}}]
  - resources: ['*.apps']
    providers: [{secretbox: {keys: [{name: apps, secret: "${key(3)}"}]}}]
  - resources: ['*.*']
    providers: [{aesgcm: {keys: [{name: any, secret: "${key(4)}"}]}}]
`;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'atrest-resolve-parity-'));
    writeFileSync(join(dir, 'enc.yaml'), text);
    oracle = startOracle();
    const r = await oracle.load(join(dir, 'enc.yaml'), { keep: true });
    assert.ok(r.ok, r.error);
  });
  after(async () => {
    await oracle?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('writes every resource with the provider and key kube-apiserver picks', async () => {
    const ours = buildTransformers(parseEncryptionConfiguration(text, 'enc.yaml'));
    const grs = [
      { group: '', resource: 'secrets' },
      { group: '', resource: 'configmaps' },
      { group: 'apps', resource: 'deployments' },
      { group: 'apps', resource: 'statefulsets' },
      { group: 'batch', resource: 'jobs' },
      { group: 'awesome.bears.example', resource: 'pandas' },
    ];
    const seen = new Set<string>();
    for (const gr of grs) {
      const stored = await oracle.toStorage(gr, '/registry/x/y', Buffer.from('v'));
      const w = ours.writeProviderFor(gr);
      assert.ok(stored.subarray(0, w.prefix.length).equals(w.prefix), `${gr.resource}.${gr.group}: ${w.label}`);
      assert.equal(w.wrote(stored), true);
      seen.add(w.label);
      const mine = await ours.transformerFor(gr).transformToStorage(Buffer.from('v'), ctx('/registry/x/y'));
      assert.equal((await oracle.fromStorage(gr, '/registry/x/y', mine)).data.toString(), 'v');
    }
    assert.deepEqual([...seen].sort(), ['aescbc/exact', 'aesgcm/any', 'aesgcm/core', 'secretbox/apps']);
  });

  it('reads an exact resource through the providers of every entry listing it, in order', async () => {
    const ours = buildTransformers(parseEncryptionConfiguration(text, 'enc.yaml'));
    const gr = { group: '', resource: 'secrets' };
    const theirs = await oracle.fromStorage(gr, '/k', Buffer.from('{"plain":true}'));
    const mine = await ours.transformerFor(gr).transformFromStorage(Buffer.from('{"plain":true}'), ctx('/k'));
    assert.equal(theirs.stale, true);
    assert.deepEqual({ data: mine.data, stale: mine.stale }, theirs);
  });
});

const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

const KMS_CASES = [
  { provider: 'kms v2', gr: { group: '', resource: 'secrets' }, etcdKey: '/registry/secrets/default/s1', prefix: 'k8s:enc:kms:v2:atrest-v2:' },
  { provider: 'kms v1', gr: { group: '', resource: 'configmaps' }, etcdKey: '/registry/configmaps/default/c1', prefix: 'k8s:enc:kms:v1:atrest-v1:' },
  { provider: 'kms v1 without a DEK cache', gr: { group: 'batch', resource: 'jobs' }, etcdKey: '/registry/jobs/default/j1', prefix: 'k8s:enc:kms:v1:atrest-v1-nocache:' },
] as const;
const KMS_SIZES = [0, 1, 1024, 64 * 1024];

async function waitFor(path: string, child: ChildProcess, stderr: () => string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!existsSync(path)) {
    if (child.exitCode !== null) throw new Error(`atrest serve exited (${child.exitCode}): ${stderr()}`);
    if (Date.now() > deadline) throw new Error(`atrest serve did not create ${path} in 30 s: ${stderr()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('kms v1 and kms v2 values are byte-compatible with kube-apiserver through the same atrest plugin', () => {
  let dir: string;
  let serve: ChildProcess | undefined;
  let oracle: Oracle | undefined;
  let ours: BuiltTransformers | undefined;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'atrest-kms-parity-'));
    const keyring = join(dir, 'keyring.json');
    const socket = join(dir, 'kms.sock');
    const init = spawnSync(process.execPath, [MAIN, 'keys', 'init', '--keyring', keyring], { encoding: 'utf8' });
    assert.equal(init.status, 0, `atrest keys init: ${init.stderr}`);
    serve = spawn(process.execPath, [MAIN, 'serve', '--listen', `unix://${socket}`, '--keyring', keyring, '--health-listen', 'off'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let log = '';
    serve.stderr!.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-4000)));
    await waitFor(socket, serve, () => log);

    const text = `apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - kms: {apiVersion: v2, name: atrest-v2, endpoint: "unix://${socket}", timeout: 10s}
  - resources: [configmaps]
    providers:
      - kms: {apiVersion: v1, name: atrest-v1, endpoint: "unix://${socket}", timeout: 10s}
  - resources: [jobs.batch]
    providers:
      - kms: {name: atrest-v1-nocache, endpoint: "unix://${socket}", cachesize: -1, timeout: 10s}
`;
    const file = join(dir, 'enc.yaml');
    writeFileSync(file, text);
    oracle = startOracle({ kmsV1: true });
    const loaded = await oracle.load(file, { keep: true });
    assert.ok(loaded.ok, `kube-apiserver's loader: ${loaded.error}`);
    ours = buildTransformers(parseEncryptionConfiguration(text, file), {
      dialKmsV1: (endpoint, timeoutMs) => createKmsV1Client({ endpoint, timeoutMs }),
      dialKmsV2: (endpoint, timeoutMs) => createKmsV2Client({ endpoint, timeoutMs }),
    });
    for (const k of ours.kmsProviders) {
      if ('refreshStatus' in k.transformer) {
        const h = await k.transformer.refreshStatus();
        assert.ok(h.ok, `Status through atrest's client: ${h.error?.message}`);
      }
    }
  });

  after(async () => {
    await oracle?.close();
    await ours?.close();
    if (serve && serve.exitCode === null) {
      const exited = new Promise((r) => serve!.once('exit', r));
      serve.kill('SIGTERM');
      const t = setTimeout(() => serve!.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    }
    rmSync(dir, { recursive: true, force: true });
  });

  for (const c of KMS_CASES) {
    it(`reads ${c.provider} values written by kube-apiserver`, async () => {
      for (const size of KMS_SIZES) {
        const plain = randomBytes(size);
        const stored = await oracle!.toStorage(c.gr, c.etcdKey, plain);
        assert.equal(stored.subarray(0, c.prefix.length).toString(), c.prefix);
        const read = await ours!.transformerFor(c.gr).transformFromStorage(stored, ctx(c.etcdKey));
        assert.ok(read.data.equals(plain), `${size} B`);
        assert.equal(read.stale, false);
      }
    });

    it(`writes ${c.provider} values kube-apiserver reads`, async () => {
      for (const size of KMS_SIZES) {
        const plain = randomBytes(size);
        const stored = await ours!.transformerFor(c.gr).transformToStorage(plain, ctx(c.etcdKey));
        assert.equal(stored.subarray(0, c.prefix.length).toString(), c.prefix);
        const read = await oracle!.fromStorage(c.gr, c.etcdKey, stored);
        assert.ok(read.data.equals(plain), `${size} B`);
        assert.equal(read.stale, false);
      }
    });
  }

  it('writes kms v2 values under the key id both sides got from the same plugin Status', async () => {
    const gr = KMS_CASES[0].gr;
    const theirs = describeStoredValue(await oracle!.toStorage(gr, KMS_CASES[0].etcdKey, Buffer.from('x')));
    const mine = describeStoredValue(await ours!.transformerFor(gr).transformToStorage(Buffer.from('x'), ctx(KMS_CASES[0].etcdKey)));
    assert.ok(theirs.keyID && theirs.keyID.length > 0);
    assert.equal(mine.keyID, theirs.keyID);
    assert.equal(mine.dekSourceType, theirs.dekSourceType);
    assert.equal(ours!.writeProviderFor(gr).keyID(), theirs.keyID);
  });

  it('both refuse a kms v2 value moved to another etcd key', async () => {
    const gr = KMS_CASES[0].gr;
    const stored = await oracle!.toStorage(gr, '/registry/secrets/a/one', Buffer.from('v'));
    await assert.rejects(ours!.transformerFor(gr).transformFromStorage(stored, ctx('/registry/secrets/a/two')));
    await assert.rejects(oracle!.fromStorage(gr, '/registry/secrets/a/two', stored));
  });

  it('both read a kms v1 value in the 1.10–1.24 CBC layout and call it stale', async () => {
    const c = KMS_CASES[1];
    const client = createKmsV1Client({ endpoint: `unix://${join(dir, 'kms.sock')}`, timeoutMs: 10_000 });
    try {
      const legacy = createKmsV1Transformer({ name: 'atrest-v1', service: client, cacheSize: 10, legacyCbcWrites: true });
      const plain = randomBytes(300);
      const stored = await createPrefixTransformers([legacy]).transformToStorage(plain, ctx(c.etcdKey));
      const theirs = await oracle!.fromStorage(c.gr, c.etcdKey, stored);
      const mine = await ours!.transformerFor(c.gr).transformFromStorage(stored, ctx(c.etcdKey));
      assert.ok(theirs.data.equals(plain) && mine.data.equals(plain));
      assert.equal(theirs.stale, true);
      assert.equal(mine.stale, true);
    } finally {
      await client.close();
    }
  });
});
