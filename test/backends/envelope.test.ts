// The remote backends' envelope (src/backends/envelope.ts) and local KEK seal: byte layout pinned by
// golden bytes, and tamper/truncation handling.
//
// IMPORTANT: the golden vectors below are stored data. kube-apiserver keeps these bytes in etcd; if
// this test fails because the layout changed, the change makes existing clusters' data unreadable.
// Add a new format version instead of editing these bytes.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { AtrestError, DecryptionFailedError } from '../../src/errors.js';
import {
  encodeDirect,
  encodeLocal,
  kekAAD,
  localAAD,
  parseEnvelope,
} from '../../src/backends/envelope.js';
import { createLocalKekTier } from '../../src/backends/local-kek.js';

/** Deterministic bytes for the vectors: SHA-256 counter stream of a label. */
function det(label: string, n: number): Buffer {
  const out: Buffer[] = [];
  for (let i = 0; out.length * 32 < n; i++)
    out.push(createHash('sha256').update(`${label}/${i}`).digest());
  return Buffer.concat(out).subarray(0, n);
}

describe('remote backend envelope', () => {
  it('keeps the direct layout byte for byte (changing this makes stored data unreadable)', () => {
    const bytes = encodeDirect('aws-kms:k1', Buffer.from('REMOTE'));
    assert.equal(
      bytes.toString('hex'),
      '41545201010a' +
        Buffer.from('aws-kms:k1').toString('hex') +
        Buffer.from('REMOTE').toString('hex'),
    );
    const env = parseEnvelope(bytes);
    assert.equal(env.mode, 'direct');
    assert.equal(env.keyID, 'aws-kms:k1');
    assert.equal(env.mode === 'direct' && env.remote.toString(), 'REMOTE');
    assert.deepEqual(env.header, bytes.subarray(0, 16));
  });

  it('keeps the local KEK layouts and associated data byte for byte (changing this makes stored data unreadable)', () => {
    const parts = {
      keyID: 'k',
      wrappedKEK: Buffer.from([0xaa, 0xbb]),
      nonce: det('n', 12),
      sealedWithTag: det('s', 48),
    };
    const inline = encodeLocal(parts, true);
    assert.equal(
      inline.toString('hex'),
      '415452010201' +
        '6b' +
        '0002aabb' +
        det('n', 12).toString('hex') +
        det('s', 48).toString('hex'),
    );
    const digest = createHash('sha256')
      .update(Buffer.from([0xaa, 0xbb]))
      .digest()
      .subarray(0, 16);
    const ref = encodeLocal(parts, false);
    assert.equal(
      ref.toString('hex'),
      '415452010301' +
        '6b' +
        digest.toString('hex') +
        det('n', 12).toString('hex') +
        det('s', 48).toString('hex'),
    );
    assert.equal(kekAAD('k').toString('hex'), '415452010201' + '6b');
    assert.equal(localAAD('k', digest).toString('hex'), '4154520102016b' + digest.toString('hex'));
    for (const bytes of [inline, ref]) {
      const env = parseEnvelope(bytes);
      assert.notEqual(env.mode, 'direct');
      if (env.mode !== 'direct') {
        assert.deepEqual(env.kekDigest, digest);
        assert.deepEqual(env.nonce, det('n', 12));
        assert.deepEqual(Buffer.concat([env.sealed, env.tag]), det('s', 48));
      }
    }
  });

  it('refuses a bad magic, an unknown format or mode, and every truncation with a format error', () => {
    const good = encodeLocal(
      { keyID: 'key', wrappedKEK: det('w', 40), nonce: det('n', 12), sealedWithTag: det('s', 48) },
      true,
    );
    for (let n = 0; n < 6 + 3 + 2 + 40 + 12 + 16; n++) {
      assert.throws(() => parseEnvelope(good.subarray(0, n)), AtrestError, `truncated to ${n}`);
    }
    const badFormat = Buffer.from(good);
    badFormat[3] = 0x02;
    assert.throws(() => parseEnvelope(badFormat), /unsupported envelope format 2/);
    const badMode = Buffer.from(good);
    badMode[4] = 0x09;
    assert.throws(() => parseEnvelope(badMode), /unknown envelope mode 9/);
  });

  it('never crashes on random bytes: it parses or throws a catalog error', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.boolean(), (bytes, withMagic) => {
        const input = withMagic
          ? Buffer.concat([Buffer.from('ATR\x01'), bytes])
          : Buffer.from(bytes);
        try {
          parseEnvelope(input);
        } catch (err) {
          assert.ok(err instanceof AtrestError);
        }
      }),
    );
  });
});

describe('local KEK tier', () => {
  function tier(options: { maxUses?: number; maxAgeMs?: number; cacheSize?: number } = {}) {
    let t = 0;
    const calls = { wrap: 0, unwrap: 0 };
    // The "remote" here is plain AES-GCM-free XOR with a tag byte: enough to count calls; the real
    // remotes are exercised by the backend suites.
    const tierUnderTest = createLocalKekTier(
      { maxUses: 1000, maxAgeMs: 60_000, cacheSize: 8, ...options },
      {
        remoteWrap: async (_id, kek) => {
          calls.wrap++;
          return Buffer.concat([Buffer.from([0x5a]), kek.map((b) => b ^ 0xff)]);
        },
        remoteUnwrap: async (_id, wrapped) => {
          calls.unwrap++;
          return Buffer.from(wrapped.subarray(1).map((b) => b ^ 0xff));
        },
        random: (n) =>
          Buffer.from(Array.from({ length: n }, () => Math.floor(Math.random() * 256))),
        now: () => t,
      },
    );
    return { tier: tierUnderTest, calls, advance: (ms: number) => (t += ms) };
  }

  it('wraps one local KEK for many DEKs, and makes a new one after max uses or max age', async () => {
    const { tier: k, calls, advance } = tier({ maxUses: 3, maxAgeMs: 1000 });
    for (let i = 0; i < 7; i++) await k.seal('id', Buffer.alloc(32, i));
    assert.equal(calls.wrap, 3);
    advance(999);
    await k.seal('id', Buffer.alloc(32));
    assert.equal(calls.wrap, 3);
    advance(1);
    await k.seal('id', Buffer.alloc(32));
    assert.equal(calls.wrap, 4);
    await k.seal('other-key-id', Buffer.alloc(32));
    assert.equal(calls.wrap, 5, 'a new remote key id gets its own local KEK');
  });

  it('shares one remote wrap among concurrent first callers', async () => {
    const { tier: k, calls } = tier();
    await Promise.all(Array.from({ length: 50 }, () => k.seal('id', Buffer.alloc(32))));
    assert.equal(calls.wrap, 1);
  });

  it('opens with one remote unwrap per local KEK after a restart, and refuses a tampered seal', async () => {
    const first = tier();
    const sealed = [];
    for (let i = 0; i < 20; i++) sealed.push(await first.tier.seal('id', Buffer.alloc(32, i)));
    const second = tier();
    const opened = await Promise.all(
      sealed.map((s) =>
        second.tier.open(
          'id',
          s.wrappedKEK,
          s.digest,
          s.nonce,
          s.sealedWithTag.subarray(0, -16),
          s.sealedWithTag.subarray(-16),
        ),
      ),
    );
    assert.deepEqual(opened[7], Buffer.alloc(32, 7));
    assert.equal(second.calls.unwrap, 1);
    const s = sealed[0]!;
    const body = Buffer.from(s.sealedWithTag.subarray(0, -16));
    body[0] = body[0]! ^ 1;
    await assert.rejects(
      second.tier.open('id', s.wrappedKEK, s.digest, s.nonce, body, s.sealedWithTag.subarray(-16)),
      DecryptionFailedError,
    );
    await assert.rejects(
      second.tier.open(
        'another-id',
        s.wrappedKEK,
        s.digest,
        s.nonce,
        s.sealedWithTag.subarray(0, -16),
        s.sealedWithTag.subarray(-16),
      ),
      DecryptionFailedError,
      'the key id is bound as associated data',
    );
  });
});
