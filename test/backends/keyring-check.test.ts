// The keyring fingerprint (same keys -> same value on every node, reveals no key) and the wrap/unwrap
// probe a key must pass before it becomes active; add/activate on the keyring document; and the keyring
// backend's reload, which keeps the loaded keys when the new active key fails that probe.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AtrestError } from '../../src/errors.js';
import {
  activateKey,
  addKey,
  createKeyring,
  parseKeyring,
  retireKey,
  rotateKeyring,
  writeKeyringFile,
  type Keyring,
} from '../../src/backends/keyring-file.js';
import { keyringFingerprint, probeKey } from '../../src/backends/keyring-check.js';
import { createKeyringBackend } from '../../src/backends/keyring.js';

const hasCode = (code: string) => (err: unknown) => err instanceof AtrestError && err.code === code;

/** A keyring with fixed ids and key bytes (0x01.. and 0x02..). */
function fixedKeyring(): Keyring {
  return parseKeyring(
    JSON.stringify({
      format: 'atrest-keyring/v1',
      active: 'k20260101T000000Z-0000000000000001',
      keys: [
        {
          id: 'k20260101T000000Z-0000000000000001',
          created: '2026-01-01T00:00:00.000Z',
          secret: Buffer.alloc(32, 1).toString('base64'),
        },
        {
          id: 'k20260201T000000Z-0000000000000002',
          created: '2026-02-01T00:00:00.000Z',
          secret: Buffer.alloc(32, 2).toString('base64'),
        },
      ],
    }),
    'fixed',
  );
}

test('the keyring fingerprint of a fixed keyring never changes (nodes on different versions compare it)', () => {
  // IMPORTANT: operators compare this value across nodes that may run different atrest versions
  // during an upgrade; changing the derivation needs a new "kf2-" prefix, not a silent change.
  // Provenance: computed independently with Python's hmac/hashlib from the derivation written in
  // src/backends/keyring-check.ts (HMAC-SHA-256 per key over the domain string and id, SHA-256 over
  // len ‖ id ‖ tag in id order, first 12 bytes).
  assert.equal(keyringFingerprint(fixedKeyring()), 'kf1-dc1d2841326acf8b653d000a');
});

test('the fingerprint depends on ids and key material, not on key order or on which key is active', () => {
  const k = fixedKeyring();
  const fp = keyringFingerprint(k);
  assert.match(fp, /^kf1-[0-9a-f]{24}$/);
  assert.equal(keyringFingerprint({ keys: [...k.keys].reverse() }), fp);
  assert.equal(keyringFingerprint(activateKey(k, k.keys[1]!.id)), fp);
  const otherBytes = { keys: [k.keys[0]!, { ...k.keys[1]!, secret: Buffer.alloc(32, 3) }] };
  assert.notEqual(keyringFingerprint(otherBytes), fp);
  const otherID = {
    keys: [k.keys[0]!, { ...k.keys[1]!, id: 'k20260201T000000Z-0000000000000003' }],
  };
  assert.notEqual(keyringFingerprint(otherID), fp);
  assert.notEqual(keyringFingerprint({ keys: [k.keys[0]!] }), fp);
  const added = addKey(k, new Date(), randomBytes);
  assert.notEqual(keyringFingerprint(added), fp);
});

test('the fingerprint contains no key bytes and no plain hash of them', async () => {
  const { createHash } = await import('node:crypto');
  const k = createKeyring({ now: new Date(), random: randomBytes });
  const fp = keyringFingerprint(k).slice(4);
  const secret = k.keys[0]!.secret;
  for (const form of [
    secret.toString('hex'),
    createHash('sha256').update(secret).digest('hex'),
    createHash('sha256').update(k.keys[0]!.id).digest('hex'),
  ]) {
    for (let i = 0; i + 8 <= fp.length; i += 4) assert.ok(!form.includes(fp.slice(i, i + 8)));
  }
});

test('keys add adds an inactive key; activate switches to it; rotate is add + activate', () => {
  const k = createKeyring({ now: new Date('2026-03-01T00:00:00Z'), random: randomBytes });
  const added = addKey(k, new Date('2026-03-02T00:00:00Z'), randomBytes);
  assert.equal(added.keys.length, 2);
  assert.equal(added.active, k.active, 'add leaves the active key alone');
  const id = added.keys[1]!.id;
  assert.match(id, /^k20260302T000000Z-/);
  assert.equal(activateKey(added, id).active, id);
  const rotated = rotateKeyring(k, new Date('2026-03-03T00:00:00Z'), randomBytes);
  assert.equal(rotated.keys.length, 2);
  assert.equal(rotated.active, rotated.keys[1]!.id);
});

test('activate refuses an unknown id (listing the ids it has) and a retired one', () => {
  const k = addKey(
    createKeyring({ now: new Date(), random: randomBytes }),
    new Date(),
    randomBytes,
  );
  assert.throws(
    () => activateKey(k, 'k-nope'),
    (err: unknown) =>
      hasCode('ERR_KEY_UNKNOWN')(err) &&
      (err as Error).message.includes('no key with id k-nope') &&
      (err as Error).message.includes(k.keys[1]!.id),
  );
  const gone = retireKey(k, k.keys[1]!.id, new Date('2026-04-01T00:00:00Z'));
  assert.throws(
    () => activateKey(gone, k.keys[1]!.id),
    (err: unknown) =>
      hasCode('ERR_KEY_UNKNOWN')(err) &&
      /was retired at 2026-04-01T00:00:00.000Z: its key material is gone/.test(
        (err as Error).message,
      ),
  );
});

test('probeKey passes for every key of a keyring and fails, naming the key, when a wrap cannot be undone', () => {
  const k = fixedKeyring();
  for (const key of k.keys) probeKey(k, key.id, randomBytes);
  assert.throws(
    () => probeKey(k, 'k-missing', randomBytes),
    /key k-missing failed the wrap\/unwrap self-test: it is not in the keyring/,
  );
  // An injected fault (no real keyring produces one): randomness of the wrong length.
  const shortNonce = (n: number): Buffer => randomBytes(n === 12 ? 11 : n);
  assert.throws(
    () => probeKey(k, k.active, shortNonce),
    (err: unknown) =>
      hasCode('ERR_KEYRING_INVALID')(err) &&
      (err as Error).message.startsWith(`key ${k.active} failed the wrap/unwrap self-test`),
  );
});

test('a reload whose new active key fails the self-test keeps the loaded keys in service', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'atrest-keyring-check-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'keyring.json');
  const first = createKeyring({ now: new Date(), random: randomBytes });
  await writeKeyringFile(path, first, { exclusive: true, random: randomBytes });
  let broken = false;
  // The injected fault: from now on every 12-byte nonce comes out one byte short.
  const random = (n: number): Buffer => randomBytes(broken && n === 12 ? 11 : n);
  const backend = await createKeyringBackend({ path, random });
  t.after(() => backend.close());
  const before = backend.describe();
  const wrapped = await backend.wrap({ plaintext: Buffer.from('dek') });

  const next = rotateKeyring(first, new Date(), randomBytes);
  await writeKeyringFile(path, next, { exclusive: false, random: randomBytes });
  broken = true;
  await assert.rejects(backend.reload(), /failed the wrap\/unwrap self-test/);
  assert.equal(await backend.currentKeyID(), first.active, 'the old active key stays');
  assert.deepEqual(backend.describe(), before);
  assert.deepEqual(await backend.unwrap({ ciphertext: wrapped.ciphertext }), Buffer.from('dek'));

  broken = false;
  await backend.reload();
  assert.equal(await backend.currentKeyID(), next.active);
  assert.equal(backend.describe().fingerprint, keyringFingerprint(next));
  assert.deepEqual(backend.keySet!(), { fingerprint: keyringFingerprint(next), keys: 2 });
});
