// buildTransformers: prefix routing per rule, write provider description, kms dialling. Byte parity with
// kube-apiserver is in test/parity/transform-parity.test.ts.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { buildTransformers, parseEncryptionConfiguration } from '../../src/config/index.js';
import type { KmsV1Service, KmsV2Service } from '../../src/transformers/kms-services.js';

const KA = Buffer.alloc(32, 1).toString('base64');
const KB = Buffer.alloc(32, 2).toString('base64');
const ctx = (key: string) => ({ authenticatedData: Buffer.from(key) });
const SECRETS = { group: '', resource: 'secrets' };

function parse(providers: string, extra = ''): ReturnType<typeof parseEncryptionConfiguration> {
  return parseEncryptionConfiguration(
    `apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n${providers}${extra}`,
    'x.yaml',
  );
}

describe('buildTransformers', () => {
  it('writes with the first provider and its first key, and reads every configured one', async () => {
    const newer = buildTransformers(
      parse(`      - aesgcm: {keys: [{name: new, secret: "${KA}"}, {name: old, secret: "${KB}"}]}\n      - identity: {}\n`),
    );
    const older = buildTransformers(parse(`      - aesgcm: {keys: [{name: old, secret: "${KB}"}]}\n`));
    const t = newer.transformerFor(SECRETS);
    const stored = await t.transformToStorage(Buffer.from('value'), ctx('/registry/secrets/a/b'));
    assert.equal(stored.subarray(0, 22).toString(), 'k8s:enc:aesgcm:v1:new:');
    assert.deepEqual(await t.transformFromStorage(stored, ctx('/registry/secrets/a/b')), {
      data: Buffer.from('value'),
      stale: false,
    });
    const byOld = await older.transformerFor(SECRETS).transformToStorage(Buffer.from('v2'), ctx('/k'));
    const read = await t.transformFromStorage(byOld, ctx('/k'));
    assert.equal(read.data.toString(), 'v2');
    assert.equal(read.stale, true, 'a non-first key is stale');
    const plain = await t.transformFromStorage(Buffer.from('{"plain":1}'), ctx('/k'));
    assert.deepEqual(plain, { data: Buffer.from('{"plain":1}'), stale: true });
  });

  it('uses the AES-GCM authenticated data: a value moved to another etcd key does not read', async () => {
    const t = buildTransformers(parse(`      - aesgcm: {keys: [{name: k, secret: "${KA}"}]}\n`)).transformerFor(SECRETS);
    const stored = await t.transformToStorage(Buffer.from('value'), ctx('/registry/secrets/a/b'));
    await assert.rejects(t.transformFromStorage(stored, ctx('/registry/secrets/a/c')));
  });

  it('gives unmatched resources identity that writes plaintext and refuses encrypted data', async () => {
    const built = buildTransformers(parse(`      - aescbc: {keys: [{name: k, secret: "${KA}"}]}\n`));
    const cm = { group: '', resource: 'configmaps' };
    assert.equal(built.ruleFor(cm), null);
    const t = built.transformerFor(cm);
    assert.equal((await t.transformToStorage(Buffer.from('x'), ctx('/k'))).toString(), 'x');
    const encrypted = await built.transformerFor(SECRETS).transformToStorage(Buffer.from('x'), ctx('/k'));
    await assert.rejects(t.transformFromStorage(encrypted, ctx('/k')));
  });

  it('describes the write provider and recognises values it wrote', async () => {
    const built = buildTransformers(
      parse(`      - secretbox: {keys: [{name: k2, secret: "${KA}"}, {name: k1, secret: "${KB}"}]}\n      - identity: {}\n`),
    );
    const w = built.writeProviderFor(SECRETS);
    assert.equal(w.label, 'secretbox/k2');
    assert.equal(w.prefix.toString(), 'k8s:enc:secretbox:v1:k2:');
    const stored = await built.transformerFor(SECRETS).transformToStorage(Buffer.from('x'), ctx('/k'));
    assert.equal(w.wrote(stored), true);
    assert.equal(w.wrote(Buffer.from('k8s:enc:secretbox:v1:k1:xxxxxxxx')), false);
    assert.equal(w.wrote(Buffer.from('plain')), false);
    const identityFirst = buildTransformers(parse('      - identity: {}\n'));
    assert.equal(identityFirst.writeProviderFor(SECRETS).label, 'identity');
    assert.equal(identityFirst.writeProviderFor(SECRETS).wrote(Buffer.from('plain')), true);
  });

  it('dials each kms provider once with its endpoint and timeout, numbered in file order', async () => {
    const dialled: string[] = [];
    let closed = 0;
    const v1: KmsV1Service = {
      encrypt: () => Promise.reject(new Error('unused')),
      decrypt: () => Promise.reject(new Error('unused')),
    };
    const v2: KmsV2Service = {
      status: () => Promise.reject(new Error('unused')),
      encrypt: () => Promise.reject(new Error('unused')),
      decrypt: () => Promise.reject(new Error('unused')),
    };
    const built = buildTransformers(
      parse(
        '      - kms: {apiVersion: v2, name: two, endpoint: "unix:///b.sock", timeout: 1500ms}\n      - kms: {name: one, endpoint: "unix:///a.sock"}\n',
      ),
      {
        dialKmsV1: (endpoint, timeoutMs) => {
          dialled.push(`v1 ${endpoint} ${timeoutMs}`);
          return { ...v1, close: () => void closed++ };
        },
        dialKmsV2: (endpoint, timeoutMs) => {
          dialled.push(`v2 ${endpoint} ${timeoutMs}`);
          return { ...v2, close: () => void closed++ };
        },
      },
    );
    assert.deepEqual(dialled, ['v2 unix:///b.sock 1500', 'v1 unix:///a.sock 3000']);
    assert.deepEqual(
      built.kmsProviders.map((k) => [k.index, k.path, k.config.name]),
      [
        [0, 'resources[0].providers[0].kms', 'two'],
        [1, 'resources[0].providers[1].kms', 'one'],
      ],
    );
    const w = built.writeProviderFor(SECRETS);
    assert.equal(w.label, 'kms-v2/two');
    assert.equal(w.keyID(), undefined, 'no key id before a Status');
    await built.close();
    assert.equal(closed, 2);
  });

  it('refuses to build kms providers without a dial function', () => {
    assert.throws(
      () => buildTransformers(parse('      - kms: {apiVersion: v2, name: two, endpoint: "unix:///b.sock"}\n')),
      TypeError,
    );
  });
});
