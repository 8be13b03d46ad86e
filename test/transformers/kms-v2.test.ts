// kms v2: the API server's state machine (Status validation, seed rotation only on a key_id change, the
// 3-minute write window), the stored EncryptedObject, the decrypt cache, staleness and polling.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { AtrestError } from '../../src/errors.js';
import { EncryptedObject } from '../../src/proto/encrypted-object.js';
import { createKmsV2Transformer } from '../../src/transformers/kms-v2.js';
import { kmsV2CacheKey } from '../../src/transformers/kms-v2-format.js';
import type { Timers } from '../../src/transformers/kms-v2.js';
import { createFakeKmsV2, ctx, kekWrap, manualClock } from './helpers.js';

const VALUE = Buffer.from('k8s\x00a secret', 'latin1');
const MIN = 60_000;

function setup(opts: { allowReadWithoutStatus?: boolean } = {}) {
  const kms = createFakeKmsV2();
  const clock = manualClock();
  let n = 0;
  const t = createKmsV2Transformer({
    name: 'kms2',
    service: kms,
    now: clock.now,
    uid: () => `uid-${++n}`,
    ...opts,
  });
  return { kms, clock, t };
}

test('refuses writes and reads before the first good Status, naming the missing state', async () => {
  const { t, kms } = setup();
  await assert.rejects(t.transformToStorage(VALUE, ctx()), (err: unknown) => {
    assert.ok(err instanceof AtrestError);
    assert.equal(err.code, 'ERR_KMS_STATE');
    assert.match(err.message, /got unexpected nil transformer/);
    return true;
  });
  const other = setup();
  await other.t.refreshStatus();
  const stored = await other.t.transformToStorage(VALUE, ctx());
  await assert.rejects(t.transformFromStorage(stored, ctx()), { code: 'ERR_KMS_STATE' });
  assert.equal(kms.calls.decrypt, 0);
});

test('allowReadWithoutStatus lets offline tools read (not write) without a Status', async () => {
  const writer = setup();
  await writer.t.refreshStatus();
  const stored = await writer.t.transformToStorage(VALUE, ctx());
  const reader = createKmsV2Transformer({
    name: 'kms2',
    service: writer.kms,
    allowReadWithoutStatus: true,
  });
  assert.deepEqual(await reader.transformFromStorage(stored, ctx()), { data: VALUE, stale: false });
  await assert.rejects(reader.transformToStorage(VALUE, ctx()), { code: 'ERR_KMS_STATE' });
  assert.equal(writer.kms.calls.status, 1);
});

test('the first good Status encrypts one 32-byte seed with a fresh uid', async () => {
  const { t, kms } = setup();
  let seedLength = -1;
  const encrypt = kms.encrypt;
  kms.encrypt = async (plain, uid) => {
    seedLength = plain.length;
    return encrypt(plain, uid);
  };
  const h = await t.refreshStatus();
  assert.equal(h.ok, true);
  assert.equal(kms.calls.encrypt, 1);
  assert.equal(seedLength, 32);
  assert.deepEqual(kms.uids, ['uid-1']);
  const state = t.currentState()!;
  assert.equal(state.keyID, 'key-1');
  assert.equal(state.uid, 'uid-1');
  assert.equal(state.sourceType, 1);
  assert.match(state.keyIDHash, /^sha256:[0-9a-f]{64}$/);
});

test('does not rotate the seed while the key_id stays the same', async () => {
  const { t, kms, clock } = setup();
  await t.refreshStatus();
  const first = await t.transformToStorage(VALUE, ctx());
  for (let i = 0; i < 5; i++) {
    clock.advance(MIN);
    assert.equal((await t.refreshStatus()).ok, true);
  }
  assert.equal(kms.calls.encrypt, 1);
  const later = await t.transformToStorage(VALUE, ctx());
  const a = EncryptedObject.decode(first.subarray(0));
  const b = EncryptedObject.decode(later.subarray(0));
  assert.deepEqual(a.encryptedDEKSource, b.encryptedDEKSource);
  // ... yet every write has its own info and nonce.
  assert.notDeepEqual(a.encryptedData.subarray(0, 44), b.encryptedData.subarray(0, 44));
});

test('rotates on a key_id change; old values read stale, new ones fresh', async () => {
  const { t, kms } = setup();
  await t.refreshStatus();
  const old = await t.transformToStorage(VALUE, ctx());
  kms.status_.keyID = 'key-2';
  assert.equal((await t.refreshStatus()).ok, true);
  assert.equal(kms.calls.encrypt, 2);
  assert.equal(t.currentState()!.keyID, 'key-2');
  const fresh = await t.transformToStorage(VALUE, ctx());
  assert.equal(EncryptedObject.decode(fresh).keyID, 'key-2');
  assert.deepEqual(await t.transformFromStorage(old, ctx()), { data: VALUE, stale: true });
  assert.deepEqual(await t.transformFromStorage(fresh, ctx()), { data: VALUE, stale: false });
});

test('refuses writes once the last good Status is more than 3 minutes old, then recovers without Encrypt', async () => {
  const { t, kms, clock } = setup();
  await t.refreshStatus();
  const stored = await t.transformToStorage(VALUE, ctx());
  kms.statusFails = true;
  clock.advance(MIN);
  const bad = await t.refreshStatus();
  assert.equal(bad.ok, false);
  assert.equal(bad.error!.code, 'ERR_KMS_CALL_FAILED');
  assert.match(bad.error!.message, /^kmsv2 Provider kms2 is not healthy, error: /);
  clock.advance(2 * MIN); // exactly 3 minutes after the last good Status: still allowed
  await t.transformToStorage(VALUE, ctx());
  clock.advance(1);
  await assert.rejects(t.transformToStorage(VALUE, ctx()), (err: unknown) => {
    assert.ok(err instanceof AtrestError);
    assert.equal(err.code, 'ERR_KMS_STATE');
    assert.match(
      err.message,
      /^encryptedDEKSource with keyID hash "sha256:[0-9a-f]{64}" expired at 2026-01-01T00:03:00Z \(current time is 2026-01-01T00:03:00Z\)$/,
    );
    return true;
  });
  // Reads do not depend on the write window.
  assert.deepEqual((await t.transformFromStorage(stored, ctx())).data, VALUE);
  kms.statusFails = false;
  assert.equal((await t.refreshStatus()).ok, true);
  await t.transformToStorage(VALUE, ctx());
  assert.equal(kms.calls.encrypt, 1);
});

test('refuses an Encrypt answer whose key_id differs from Status and keeps no state', async () => {
  const { t, kms } = setup();
  kms.encryptOverride = { keyID: 'other-key' };
  const h = await t.refreshStatus();
  assert.equal(h.ok, false);
  assert.equal(h.error!.code, 'ERR_KMS_STATE');
  assert.match(h.error!.message, /failed to rotate DEK uid="uid-1", useSeed=true/);
  assert.match(h.error!.message, /the key_id of Encrypt differs from the key_id of Status/);
  assert.equal(t.currentState(), undefined);
  await assert.rejects(t.transformToStorage(VALUE, ctx()), { code: 'ERR_KMS_STATE' });
});

test('a failed rotation keeps the previous state usable until it expires', async () => {
  const { t, kms, clock } = setup();
  await t.refreshStatus();
  kms.status_.keyID = 'key-2';
  kms.encryptFails = true;
  const h = await t.refreshStatus();
  assert.equal(h.ok, false);
  assert.match(h.error!.message, /errGen=failed to encrypt DEK, error: fake KMS v2 cannot encrypt/);
  const stored = await t.transformToStorage(VALUE, ctx());
  assert.equal(EncryptedObject.decode(stored).keyID, 'key-1');
  clock.advance(3 * MIN + 1);
  await assert.rejects(t.transformToStorage(VALUE, ctx()), { code: 'ERR_KMS_STATE' });
});

for (const [what, annotations] of [
  ['an uppercase key', { 'Kms.Example.io': Buffer.from('x') }],
  ['a single-label key', { example: Buffer.from('x') }],
  ['a key with a slash', { 'kms.example.io/remote-kms-auditid': Buffer.from('x') }],
  ['a label longer than 63', { [`${'a'.repeat(64)}.example.io`]: Buffer.from('x') }],
  ['a total size over 32768', { 'a.example.io': Buffer.alloc(32768 - 11) }],
] as const) {
  test(`refuses Encrypt annotations with ${what}`, async () => {
    const { t, kms } = setup();
    kms.annotations = annotations as Record<string, Buffer>;
    const h = await t.refreshStatus();
    assert.equal(h.ok, false);
    assert.match(h.error!.message, /failed to rotate DEK/);
    assert.equal(t.currentState(), undefined);
  });
}

test('stores valid annotations and passes them, the key id and a uid to Decrypt', async () => {
  const { t, kms } = setup();
  kms.annotations = {
    'version.encryption.remote.io': Buffer.from('1'),
    'a.example.io.': Buffer.alloc(
      32768 - 'a.example.io.'.length - 'version.encryption.remote.io'.length - 1,
    ),
  };
  assert.equal((await t.refreshStatus()).ok, true);
  const stored = await t.transformToStorage(VALUE, ctx());
  const obj = EncryptedObject.decode(stored);
  assert.deepEqual(Object.keys(obj.annotations).sort(), [
    'a.example.io.',
    'version.encryption.remote.io',
  ]);
  let seen: { keyID: string; uid: string; annotations: string[] } | undefined;
  const reader = createKmsV2Transformer({
    name: 'kms2',
    service: {
      ...kms,
      decrypt: async (req) => {
        seen = { keyID: req.keyID, uid: req.uid, annotations: Object.keys(req.annotations).sort() };
        return kms.decrypt(req);
      },
    },
    uid: () => 'reader-uid',
    allowReadWithoutStatus: true,
  });
  assert.deepEqual((await reader.transformFromStorage(stored, ctx())).data, VALUE);
  assert.deepEqual(seen, {
    keyID: 'key-1',
    uid: 'reader-uid',
    annotations: ['a.example.io.', 'version.encryption.remote.io'],
  });
});

test('validates Status: healthz, version (and that it does not change) and key_id', async () => {
  const { t, kms } = setup();
  kms.status_.healthz = 'degraded';
  let h = await t.refreshStatus();
  assert.equal(h.ok, false);
  assert.equal(
    h.error!.message,
    'kmsv2 Provider kms2 is not healthy, error: got unexpected healthz status: degraded',
  );
  // The key_id was valid, so the seed was generated all the same.
  assert.equal(kms.calls.encrypt, 1);

  kms.status_.healthz = 'ok';
  kms.status_.version = 'v1beta1';
  h = await t.refreshStatus();
  assert.equal(h.error!.code, 'ERR_KMS_VERSION');
  assert.match(h.error!.message, /expected KMSv2 API version v2, got v1beta1/);

  kms.status_.version = 'v2beta1';
  h = await t.refreshStatus();
  assert.equal(h.ok, false);
  assert.match(
    h.error!.message,
    /KMSv2 API version should not change after the initial status response version v2, got v2beta1/,
  );

  kms.status_.version = 'v2';
  kms.status_.keyID = '';
  h = await t.refreshStatus();
  assert.match(h.error!.message, /got invalid KMSv2 KeyID hash "": keyID is empty/);
  kms.status_.keyID = 'k'.repeat(1025);
  h = await t.refreshStatus();
  assert.match(h.error!.message, /keyID is 1025 bytes, which exceeds the max size of 1024/);
  assert.equal(kms.calls.encrypt, 1);
  kms.status_.keyID = 'k'.repeat(1024);
  assert.equal((await t.refreshStatus()).ok, true);
  assert.equal(kms.calls.encrypt, 2);
});

test('accepts v2beta1 as the first version (1.27/1.28 plugins)', async () => {
  const { t, kms } = setup();
  kms.status_.version = 'v2beta1';
  assert.equal((await t.refreshStatus()).ok, true);
});

test('refuses an encrypted seed that is empty or longer than 1024 bytes', async () => {
  for (const ciphertext of [Buffer.alloc(0), Buffer.alloc(1025, 1)]) {
    const { t, kms } = setup();
    kms.encryptOverride = { ciphertext };
    const h = await t.refreshStatus();
    assert.equal(h.ok, false);
    assert.match(h.error!.message, /encrypted DEK source is (empty|1025 bytes)/);
  }
  const { t, kms } = setup();
  kms.encryptOverride = { ciphertext: Buffer.alloc(1024, 1) };
  assert.equal((await t.refreshStatus()).ok, true);
});

test('writes type 1 EncryptedObjects: [info 32][nonce 12][ct][tag 16], fields 1,2,3,5', async () => {
  const { t } = setup();
  await t.refreshStatus();
  assert.deepEqual(t.prefix, Buffer.from('k8s:enc:kms:v2:kms2:'));
  const stored = await t.transformToStorage(VALUE, ctx());
  const obj = EncryptedObject.decode(stored);
  assert.equal(obj.encryptedDEKSourceType, 1);
  assert.equal(obj.encryptedData.length, 32 + 12 + VALUE.length + 16);
  assert.equal(stored[0], 0x0a);
  assert.deepEqual(stored.subarray(-2), Buffer.from([0x28, 0x01]));
  const n = obj.encryptedData.length;
  const c = obj.encryptedDEKSource.length;
  assert.equal(stored.length, 1 + 1 + n + 1 + 1 + 'key-1'.length + 1 + 1 + c + 2);
});

test('caches decrypted seeds: one Decrypt per (type, source, key id, annotations)', async () => {
  const writer = setup();
  await writer.t.refreshStatus();
  const a = await writer.t.transformToStorage(VALUE, ctx());
  const b = await writer.t.transformToStorage(VALUE, ctx());
  const reader = setup();
  reader.kms.decrypt = writer.kms.decrypt;
  await reader.t.refreshStatus();
  const before = writer.kms.calls.decrypt;
  await reader.t.transformFromStorage(a, ctx());
  await reader.t.transformFromStorage(b, ctx());
  await reader.t.transformFromStorage(a, ctx());
  assert.equal(writer.kms.calls.decrypt - before, 1);
  // The writer itself never needs Decrypt for its own seed.
  await writer.t.transformFromStorage(a, ctx());
  assert.equal(writer.kms.calls.decrypt - before, 1);
  // After 24 h the entry is gone.
  reader.clock.advance(24 * 60 * MIN + 1);
  await reader.t.transformFromStorage(a, ctx());
  assert.equal(writer.kms.calls.decrypt - before, 2);
});

test('the cache key is SHA-256 of the documented layout (annotations sorted, only when present)', () => {
  const layout = Buffer.concat([
    Buffer.from([0, 0, 0, 1]),
    Buffer.from([0, 3]),
    Buffer.from('src'),
    Buffer.from([0, 2]),
    Buffer.from('k1'),
  ]);
  const expected = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
  assert.equal(kmsV2CacheKey(1, Buffer.from('src'), 'k1', {}), expected(layout));
  const withAnnotations = Buffer.concat([
    layout,
    Buffer.from([0, 0, 0, 2]),
    Buffer.from([0, 3]),
    Buffer.from('a.b'),
    Buffer.from([0, 1]),
    Buffer.from('1'),
    Buffer.from([0, 3]),
    Buffer.from('c.d'),
    Buffer.from([0, 0]),
  ]);
  assert.equal(
    kmsV2CacheKey(1, Buffer.from('src'), 'k1', { 'c.d': Buffer.alloc(0), 'a.b': Buffer.from('1') }),
    expected(withAnnotations),
  );
});

test('reads type 0 objects (written by 1.25–1.28) and reports them stale', async () => {
  const kek = randomBytes(32);
  const kms = createFakeKmsV2({ 'key-1': kek });
  const t = createKmsV2Transformer({ name: 'kms2', service: kms });
  await t.refreshStatus();
  const dek = randomBytes(32);
  // 1.27/1.28 counter nonce: 4 random bytes, then a little-endian counter starting at 1,000,000,001.
  const nonce = Buffer.concat([randomBytes(4), Buffer.from('01ca9a3b00000000', 'hex')]);
  const c = createCipheriv('aes-256-gcm', dek, nonce);
  c.setAAD(ctx().authenticatedData);
  const encryptedData = Buffer.concat([nonce, c.update(VALUE), c.final(), c.getAuthTag()]);
  const stored = EncryptedObject.encode({
    encryptedData,
    keyID: 'key-1',
    encryptedDEKSource: kekWrap(kek, dek, Buffer.from('key-1'), randomBytes(12)),
  });
  assert.deepEqual(await t.transformFromStorage(stored, ctx()), { data: VALUE, stale: true });
  await assert.rejects(t.transformFromStorage(stored, ctx('/registry/secrets/other')), {
    code: 'ERR_DECRYPTION_FAILED',
  });
});

test('refuses stored objects that upstream would not accept, before calling the plugin', async () => {
  const { t, kms } = setup();
  await t.refreshStatus();
  const good = EncryptedObject.decode(await t.transformToStorage(VALUE, ctx()));
  const bad = [
    { ...good, encryptedDEKSourceType: 2 },
    { ...good, keyID: '' },
    { ...good, encryptedDEKSource: Buffer.alloc(0) },
    { ...good, encryptedData: Buffer.alloc(0) },
    { ...good, annotations: { UPPER: Buffer.from('x') } },
  ];
  for (const o of bad) {
    await assert.rejects(t.transformFromStorage(EncryptedObject.encode(o), ctx()), {
      code: 'ERR_FORMAT_MALFORMED',
    });
  }
  await assert.rejects(t.transformFromStorage(Buffer.from([0x0a, 0x05, 1]), ctx()), {
    code: 'ERR_PROTO_MALFORMED',
  });
  assert.equal(kms.calls.decrypt, 0);
});

test('a plugin Decrypt failure is ERR_KMS_CALL_FAILED "failed to decrypt DEK"', async () => {
  const writer = setup();
  await writer.t.refreshStatus();
  const stored = await writer.t.transformToStorage(VALUE, ctx());
  const reader = setup();
  await reader.t.refreshStatus();
  await assert.rejects(reader.t.transformFromStorage(stored, ctx()), {
    code: 'ERR_KMS_CALL_FAILED',
    message: /^failed to decrypt DEK, error: /,
  });
  reader.kms.decryptFails = true;
  await assert.rejects(reader.t.transformFromStorage(stored, ctx()), {
    code: 'ERR_KMS_CALL_FAILED',
    message: 'failed to decrypt DEK, error: fake KMS v2 cannot decrypt',
  });
});

test('concurrent refreshes share one Status call; healthz caches 20 s / 3 s', async () => {
  const { t, kms, clock } = setup();
  await Promise.all([t.refreshStatus(), t.refreshStatus(), t.refreshStatus()]);
  assert.equal(kms.calls.status, 1);
  await t.healthz();
  clock.advance(19_999);
  await t.healthz();
  assert.equal(kms.calls.status, 1);
  clock.advance(1);
  await t.healthz();
  assert.equal(kms.calls.status, 2);
  kms.statusFails = true;
  clock.advance(20_000);
  assert.equal((await t.healthz()).ok, false);
  clock.advance(2_999);
  await t.healthz();
  assert.equal(kms.calls.status, 3);
  clock.advance(1);
  await t.healthz();
  assert.equal(kms.calls.status, 4);
});

function fakeTimers() {
  const pending = new Map<number, { fn: () => void; ms: number }>();
  let next = 0;
  const timers: Timers = {
    setTimeout(fn, ms) {
      pending.set(++next, { fn, ms });
      return next;
    },
    clearTimeout(handle) {
      pending.delete(handle as number);
    },
  };
  return {
    timers,
    pending,
    /** Fires the single pending timer and waits for the poll it starts to finish. */
    async fire(): Promise<number> {
      assert.equal(pending.size, 1);
      const [id, { fn, ms }] = [...pending][0]!;
      pending.delete(id);
      fn();
      await new Promise((r) => setImmediate(r));
      return ms;
    },
  };
}

test('polls Status every minute when healthy and every 10 s after a failure, until stopped', async () => {
  const { t, kms } = setup();
  const ft = fakeTimers();
  const results: boolean[] = [];
  const handle = t.startPolling({ timers: ft.timers, onResult: (h) => results.push(h.ok) });
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(results, [true]);
  assert.equal(await ft.fire(), 60_000);
  kms.statusFails = true;
  assert.equal(await ft.fire(), 60_000);
  assert.deepEqual(results, [true, true, false]);
  assert.equal(await ft.fire(), 10_000);
  kms.statusFails = false;
  assert.equal(await ft.fire(), 10_000);
  assert.deepEqual(results, [true, true, false, false, true]);
  assert.equal([...ft.pending.values()][0]!.ms, 60_000);
  handle.stop();
  assert.equal(ft.pending.size, 0);
  assert.equal(kms.calls.encrypt, 1);
});

test('polling can start without an immediate check and with custom intervals', async () => {
  const { t, kms } = setup();
  const ft = fakeTimers();
  const handle = t.startPolling({ timers: ft.timers, immediate: false, healthyIntervalMs: 5 });
  assert.equal(kms.calls.status, 0);
  assert.equal(await ft.fire(), 5);
  assert.equal(kms.calls.status, 1);
  handle.stop();
});

test('concurrent reads of values sharing an uncached seed make one Decrypt call; failures are not cached', async () => {
  const writer = setup();
  await writer.t.refreshStatus();
  const values = await Promise.all([1, 2, 3].map(() => writer.t.transformToStorage(VALUE, ctx())));
  const reader = createKmsV2Transformer({
    name: 'kms2',
    service: writer.kms,
    allowReadWithoutStatus: true,
  });
  writer.kms.decryptFails = true;
  await assert.rejects(reader.transformFromStorage(values[0]!, ctx()), {
    code: 'ERR_KMS_CALL_FAILED',
  });
  writer.kms.decryptFails = false;
  const before = writer.kms.calls.decrypt;
  const results = await Promise.all(
    [...values, ...values].map((v) => reader.transformFromStorage(v, ctx())),
  );
  assert.ok(results.every((r) => r.data.equals(VALUE)));
  assert.equal(writer.kms.calls.decrypt - before, 1);
});

test('annotation keys must be lowercase FQDNs as apimachinery defines them', async () => {
  const { isFullyQualifiedDomainName } =
    await import('../../src/transformers/kms-v2-validation.js');
  const label63 = 'a'.repeat(63);
  for (const ok of [
    'a.b',
    'kms.example.io',
    'kms.example.io.',
    'x-1.y-2.z',
    `${label63}.io`,
    `${[label63, label63, label63].join('.')}.${'b'.repeat(61)}`, // 253
  ]) {
    assert.equal(isFullyQualifiedDomainName(ok), true, ok);
  }
  for (const bad of [
    '',
    '.',
    'example',
    'example.',
    'Kms.example.io',
    'kms_example.io',
    '-kms.example.io',
    'kms-.example.io',
    'kms..io',
    'kms.example.io/audit',
    `${'a'.repeat(64)}.io`,
    `${[label63, label63, label63].join('.')}.${'b'.repeat(62)}`, // 254
  ]) {
    assert.equal(isFullyQualifiedDomainName(bad), false, bad);
  }
});
