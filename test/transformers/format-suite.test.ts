// One suite, every format: round trips, AAD binding, tamper of each region, truncation, wrong key.
// Each format is exercised through a prefix list, exactly as the config layer will wire it.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { AtrestError, DecryptionFailedError } from '../../src/errors.js';
import { createKeyedProvider, createPrefixTransformers } from '../../src/transformers/prefix.js';
import type { KeyedProviderName } from '../../src/transformers/prefix.js';
import { createKmsV1Transformer } from '../../src/transformers/kms-v1.js';
import { createKmsV2Transformer } from '../../src/transformers/kms-v2.js';
import { EncryptedObject } from '../../src/proto/encrypted-object.js';
import type { FromStorageResult, Transformer } from '../../src/transformers/transformer.js';
import { createFakeKmsV1, createFakeKmsV2, ctx, deterministicRandom } from './helpers.js';

interface Region {
  readonly name: string;
  readonly start: number;
  readonly end: number;
}

interface FormatCase {
  readonly name: string;
  /** Tampering is detected (AEAD); false for aescbc, whose modified values may decrypt to other bytes. */
  readonly authenticated: boolean;
  /**
   * kms v1 falls back to the unauthenticated 1.10–1.24 CBC payload when GCM fails (as upstream): a damaged
   * value may then come back as other bytes, but always marked stale.
   */
  readonly staleFallback?: boolean;
  /** The etcd key is authenticated data. */
  readonly bindsEtcdKey: boolean;
  make(): Promise<{ transformer: Transformer; wrongKey: Transformer }>;
  regions(value: Buffer): Region[];
}

const PLAINTEXT = Buffer.from(
  'k8s\x00' + 'a secret value of fifty bytes, give or take ...',
  'latin1',
);

function keyed(provider: KeyedProviderName, keySize: number): FormatCase {
  const rnd = deterministicRandom(`suite-${provider}`);
  const make = (secret: Buffer): Transformer =>
    createPrefixTransformers([
      createKeyedProvider(provider, [{ name: 'key1', secret }], { random: rnd }),
    ]);
  const prefixLen = `k8s:enc:${provider}:v1:key1:`.length;
  return {
    name: provider,
    authenticated: provider !== 'aescbc',
    bindsEtcdKey: provider === 'aesgcm',
    async make() {
      return { transformer: make(rnd(keySize)), wrongKey: make(rnd(keySize)) };
    },
    regions(v) {
      const p = prefixLen;
      switch (provider) {
        case 'aescbc':
          return [
            { name: 'prefix', start: 0, end: p },
            { name: 'iv', start: p, end: p + 16 },
            { name: 'body', start: p + 16, end: v.length },
          ];
        case 'aesgcm':
          return [
            { name: 'prefix', start: 0, end: p },
            { name: 'nonce', start: p, end: p + 12 },
            { name: 'body', start: p + 12, end: v.length - 16 },
            { name: 'tag', start: v.length - 16, end: v.length },
          ];
        case 'secretbox':
          return [
            { name: 'prefix', start: 0, end: p },
            { name: 'nonce', start: p, end: p + 24 },
            { name: 'tag', start: p + 24, end: p + 40 },
            { name: 'body', start: p + 40, end: v.length },
          ];
      }
    },
  };
}

const kmsV1Case: FormatCase = {
  name: 'kms v1',
  authenticated: true,
  staleFallback: true,
  bindsEtcdKey: true,
  async make() {
    const make = () =>
      createPrefixTransformers([
        createKmsV1Transformer({ name: 'p1', service: createFakeKmsV1(), cacheSize: -1 }),
      ]);
    return { transformer: make(), wrongKey: make() };
  },
  regions(v) {
    const p = 'k8s:enc:kms:v1:p1:'.length;
    const l = v.readUInt16BE(p);
    const payload = p + 2 + l;
    return [
      { name: 'prefix', start: 0, end: p },
      { name: 'edek length', start: p, end: p + 2 },
      { name: 'edek', start: p + 2, end: payload },
      { name: 'nonce', start: payload, end: payload + 12 },
      { name: 'body', start: payload + 12, end: v.length - 16 },
      { name: 'tag', start: v.length - 16, end: v.length },
    ];
  },
};

const kmsV2Case: FormatCase = {
  name: 'kms v2',
  authenticated: true,
  bindsEtcdKey: true,
  async make() {
    const make = async () => {
      const t = createKmsV2Transformer({ name: 'p2', service: createFakeKmsV2() });
      const h = await t.refreshStatus();
      assert.equal(h.ok, true);
      return createPrefixTransformers([t]);
    };
    return { transformer: await make(), wrongKey: await make() };
  },
  regions(v) {
    const p = 'k8s:enc:kms:v2:p2:'.length;
    const obj = EncryptedObject.decode(v.subarray(p));
    const at = (part: Uint8Array): number => {
      const i = v.indexOf(part, p);
      assert.ok(i > 0);
      return i;
    };
    const data = at(obj.encryptedData);
    const keyID = at(Buffer.from(obj.keyID));
    const src = at(obj.encryptedDEKSource);
    const dataEnd = data + obj.encryptedData.length;
    return [
      { name: 'prefix', start: 0, end: p },
      { name: 'encryptedData field header', start: p, end: data },
      { name: 'info', start: data, end: data + 32 },
      { name: 'nonce', start: data + 32, end: data + 44 },
      { name: 'body', start: data + 44, end: dataEnd - 16 },
      { name: 'tag', start: dataEnd - 16, end: dataEnd },
      { name: 'keyID', start: keyID, end: keyID + obj.keyID.length },
      { name: 'encryptedDEKSource', start: src, end: src + obj.encryptedDEKSource.length },
      { name: 'source type', start: v.length - 2, end: v.length },
    ];
  },
};

const CASES: FormatCase[] = [
  keyed('aescbc', 32),
  keyed('aescbc', 16),
  keyed('aesgcm', 32),
  keyed('aesgcm', 24),
  keyed('aesgcm', 16),
  keyed('secretbox', 32),
  kmsV1Case,
  kmsV2Case,
];

async function readOrError(t: Transformer, value: Uint8Array, etcdKey?: string) {
  try {
    return { result: await t.transformFromStorage(value, ctx(etcdKey)) };
  } catch (error) {
    return { error };
  }
}

/** A damaged value was read: only formats without authentication may do that, never with the plaintext. */
function assertUnauthenticatedRead(c: FormatCase, result: FromStorageResult, where: string): void {
  assert.ok(!c.authenticated || c.staleFallback, `${where} was accepted`);
  if (c.authenticated) assert.equal(result.stale, true, `${where} was accepted as fresh`);
  assert.ok(!result.data.equals(PLAINTEXT), where);
}

for (const c of CASES) {
  describe(`the ${c.name} format`, () => {
    test('round-trips empty, small, block-sized and large values', async () => {
      const { transformer } = await c.make();
      for (const size of [0, 1, 15, 16, 17, 1024, 64 * 1024 + 3]) {
        const value = Buffer.alloc(size, size % 251);
        const stored = await transformer.transformToStorage(value, ctx());
        const back = await transformer.transformFromStorage(stored, ctx());
        assert.deepEqual(back.data, value, `size ${size}`);
        assert.equal(back.stale, false);
        // Plain Uint8Arrays (an etcd client's bytes, a view into a larger buffer) read the same.
        const framed = new Uint8Array(stored.length + 7);
        framed.set(stored, 3);
        const view = framed.subarray(3, 3 + stored.length);
        assert.deepEqual((await transformer.transformFromStorage(view, ctx())).data, value);
        assert.deepEqual(
          await transformer.transformToStorage(new Uint8Array(value), ctx()).then((b) => b.length),
          stored.length,
        );
      }
    });

    test('never stores the plaintext and never writes the same bytes twice', async () => {
      const { transformer } = await c.make();
      const a = await transformer.transformToStorage(PLAINTEXT, ctx());
      const b = await transformer.transformToStorage(PLAINTEXT, ctx());
      assert.notDeepEqual(a, b);
      assert.equal(a.indexOf(PLAINTEXT.subarray(4, 20)), -1);
      assert.ok(a.subarray(0, 8).equals(Buffer.from('k8s:enc:')));
    });

    if (c.bindsEtcdKey) {
      test('refuses a value read under another etcd key', async () => {
        const { transformer } = await c.make();
        const stored = await transformer.transformToStorage(
          PLAINTEXT,
          ctx('/registry/secrets/a/b'),
        );
        const r = await readOrError(transformer, stored, '/registry/secrets/a/c');
        assert.ok(r.error instanceof AtrestError, String(r.error));
        assert.equal(r.error.code, 'ERR_DECRYPTION_FAILED');
      });
    } else {
      test('is not bound to the etcd key (as upstream)', async () => {
        const { transformer } = await c.make();
        const stored = await transformer.transformToStorage(
          PLAINTEXT,
          ctx('/registry/secrets/a/b'),
        );
        const r = await transformer.transformFromStorage(stored, ctx('/registry/secrets/a/c'));
        assert.deepEqual(r.data, PLAINTEXT);
      });
    }

    test('refuses a value written with another key', async () => {
      const { transformer, wrongKey } = await c.make();
      const stored = await transformer.transformToStorage(PLAINTEXT, ctx());
      const r = await readOrError(wrongKey, stored);
      if (c.authenticated) {
        assert.ok(r.error instanceof AtrestError, String(r.error));
        assert.equal(r.result, undefined);
      } else {
        assert.ok(r.error instanceof AtrestError || !r.result!.data.equals(PLAINTEXT));
      }
    });

    test('turns a flipped bit in every region into a clean error, never the plaintext', async () => {
      const { transformer } = await c.make();
      const stored = await transformer.transformToStorage(PLAINTEXT, ctx());
      const regions = c.regions(stored);
      for (const region of regions) {
        assert.ok(region.end > region.start, `region ${region.name} is empty`);
        for (const pos of new Set([
          region.start,
          (region.start + region.end) >> 1,
          region.end - 1,
        ])) {
          const tampered = Buffer.from(stored);
          tampered[pos]! ^= 0x01;
          const r = await readOrError(transformer, tampered);
          if (r.error !== undefined) {
            assert.ok(r.error instanceof AtrestError, `${region.name}@${pos}: ${String(r.error)}`);
            assert.ok(!String(r.error.message).includes(PLAINTEXT.toString('latin1')));
          } else {
            assertUnauthenticatedRead(c, r.result!, `${region.name}@${pos}`);
          }
        }
      }
    });

    test('turns every truncation into a clean error, never the plaintext', async () => {
      const { transformer } = await c.make();
      const stored = await transformer.transformToStorage(PLAINTEXT, ctx());
      for (let cut = 0; cut < stored.length; cut++) {
        const r = await readOrError(transformer, stored.subarray(0, cut));
        if (r.error !== undefined) {
          assert.ok(r.error instanceof AtrestError, `cut ${cut}: ${String(r.error)}`);
        } else {
          assertUnauthenticatedRead(c, r.result!, `cut ${cut}`);
        }
      }
    });

    if (c.authenticated) {
      test('reports authentication failures with the one generic message', async () => {
        const { transformer } = await c.make();
        const stored = await transformer.transformToStorage(PLAINTEXT, ctx());
        const tag = c.regions(stored).find((r) => r.name === 'tag')!;
        const tampered = Buffer.from(stored);
        tampered[tag.end - 1]! ^= 0x80;
        await assert.rejects(transformer.transformFromStorage(tampered, ctx()), (err: unknown) => {
          assert.ok(err instanceof AtrestError);
          assert.equal(err.code, 'ERR_DECRYPTION_FAILED');
          assert.match(err.message, /decryption failed/);
          const inner = (err as { attempts?: { error: unknown }[] }).attempts?.[0]?.error ?? err;
          assert.ok(inner instanceof DecryptionFailedError);
          return true;
        });
      });
    }
  });
}
