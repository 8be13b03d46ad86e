// The keyring file (validation, atomic 0600 writes, permissions) and the keyring KeyBackend
// (wrap/unwrap across rotation and reload, unknown ids, mismatched ids, bad reloads).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AtrestError, DecryptionFailedError } from '../../src/errors.js';
import {
  createKeyring,
  parseKeyring,
  readKeyringFile,
  retireKey,
  rotateKeyring,
  serializeKeyring,
  writeKeyringFile,
} from '../../src/backends/keyring-file.js';
import { createKeyringBackend } from '../../src/backends/keyring.js';

async function tempDir(t: { after(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'atrest-keyring-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function newKeyringFile(dir: string): Promise<string> {
  const path = join(dir, 'keyring.json');
  await writeKeyringFile(path, createKeyring({ now: new Date(), random: randomBytes }), {
    exclusive: true,
    random: randomBytes,
  });
  return path;
}

function hasCode(code: string) {
  return (err: unknown) => err instanceof AtrestError && err.code === code;
}

test('a new keyring has one active 32-byte key whose id reveals nothing of the key', () => {
  const k = createKeyring({ now: new Date('2026-01-02T03:04:05Z'), random: randomBytes });
  assert.equal(k.keys.length, 1);
  assert.equal(k.active, k.keys[0]!.id);
  assert.equal(k.keys[0]!.secret.length, 32);
  assert.match(k.active, /^k20260102T030405Z-[0-9a-f]{16}$/);
  const hex = k.keys[0]!.secret.toString('hex');
  assert.ok(!hex.includes(k.active.slice(-16)), 'the id is not taken from the key bytes');
});

test('rotate adds a new active key and keeps every older key', () => {
  let k = createKeyring({ now: new Date(), random: randomBytes });
  const first = k.active;
  k = rotateKeyring(k, new Date(), randomBytes);
  k = rotateKeyring(k, new Date(), randomBytes);
  assert.equal(k.keys.length, 3);
  assert.equal(k.keys[0]!.id, first);
  assert.equal(k.active, k.keys[2]!.id);
  assert.equal(new Set(k.keys.map((x) => x.id)).size, 3);
});

test('key ids are never reused, even when the random source repeats itself', () => {
  // An injected fault: a random source that returns the same bytes every time.
  const stuck = (n: number): Buffer => Buffer.alloc(n, 7);
  const now = new Date('2026-01-01T00:00:00Z');
  const stuckThenRandom = (stuckCalls: number) => {
    let calls = 0;
    return (n: number): Buffer => (++calls > stuckCalls ? randomBytes(n) : stuck(n));
  };
  let k = createKeyring({ now, random: stuck });
  const retiredID = k.active;
  k = rotateKeyring(k, now, stuckThenRandom(3));
  k = retireKey(k, retiredID, now);
  // The first candidate id equals the retired one: it must be skipped.
  k = rotateKeyring(k, now, stuckThenRandom(2));
  const ids = [...k.keys.map((x) => x.id), ...k.retired.map((r) => r.id)];
  assert.equal(new Set(ids).size, ids.length);
  assert.ok(!k.keys.some((x) => x.id === retiredID));
});

test('retire refuses the active key and unknown ids, and remembers retired ids', () => {
  let k = createKeyring({ now: new Date(), random: randomBytes });
  const first = k.active;
  assert.throws(() => retireKey(k, first, new Date()), hasCode('ERR_KEYRING_INVALID'));
  assert.throws(() => retireKey(k, 'nope', new Date()), hasCode('ERR_KEY_UNKNOWN'));
  k = rotateKeyring(k, new Date(), randomBytes);
  k = retireKey(k, first, new Date());
  assert.deepEqual(
    k.keys.map((x) => x.id),
    [k.active],
  );
  assert.equal(k.retired[0]!.id, first);
  const reparsed = parseKeyring(serializeKeyring(k), 'test');
  assert.equal(reparsed.retired[0]!.id, first);
});

test('an invalid keyring document reports every problem and never the secret', () => {
  const doc = {
    format: 'wrong',
    active: 'missing',
    keys: [
      { id: 'a', created: 'x', secret: 'c2hvcnQ=' },
      { id: 'a', created: '2026-01-01T00:00:00Z', secret: Buffer.alloc(32, 1).toString('base64') },
      { id: 'bad id!', created: '2026-01-01T00:00:00Z', secret: 'not base64 $$$' },
    ],
  };
  assert.throws(
    () => parseKeyring(JSON.stringify(doc), 'k.json'),
    (err: unknown) => {
      assert.ok(err instanceof AtrestError && err.code === 'ERR_KEYRING_INVALID');
      for (const part of [
        'format',
        'keys[0].created',
        'keys[0].secret',
        'keys[1].id',
        'keys[2].id',
        'active',
      ]) {
        assert.ok(err.message.includes(part), `mentions ${part}: ${err.message}`);
      }
      assert.ok(!err.message.includes('c2hvcnQ='));
      assert.ok(!err.message.includes(Buffer.alloc(32, 1).toString('base64')));
      return true;
    },
  );
  assert.throws(() => parseKeyring('{', 'k.json'), hasCode('ERR_KEYRING_INVALID'));
});

test('keyring files are written 0600, atomically, and init never overwrites', async (t) => {
  const dir = await tempDir(t);
  const path = await newKeyringFile(dir);
  assert.equal((await stat(path)).mode & 0o777, 0o600);
  const before = await readFile(path, 'utf8');
  await assert.rejects(
    writeKeyringFile(path, createKeyring({ now: new Date(), random: randomBytes }), {
      exclusive: true,
      random: randomBytes,
    }),
    hasCode('ERR_KEYRING_EXISTS'),
  );
  assert.equal(await readFile(path, 'utf8'), before);
  const rotated = rotateKeyring(await readKeyringFile(path), new Date(), randomBytes);
  await writeKeyringFile(path, rotated, { exclusive: false, random: randomBytes });
  assert.equal((await stat(path)).mode & 0o777, 0o600);
  assert.equal((await readKeyringFile(path)).active, rotated.active);
  assert.deepEqual(await readdir(dir), ['keyring.json'], 'no temp files left behind');
});

test('a keyring readable by group or others, or a missing file, is refused; symlinks are judged by their target', async (t) => {
  const dir = await tempDir(t);
  const path = await newKeyringFile(dir);
  for (const mode of [0o640, 0o604, 0o660]) {
    await chmod(path, mode);
    await assert.rejects(readKeyringFile(path), (err: unknown) => {
      assert.ok(err instanceof AtrestError && err.code === 'ERR_KEYRING_PERMISSIONS');
      assert.match(err.message, /chmod 600/);
      return true;
    });
    await assert.rejects(createKeyringBackend({ path }), hasCode('ERR_KEYRING_PERMISSIONS'));
  }
  const link = join(dir, 'link.json');
  await symlink(path, link);
  await assert.rejects(readKeyringFile(link), hasCode('ERR_KEYRING_PERMISSIONS'));
  await chmod(path, 0o400);
  assert.equal(
    (await readKeyringFile(link)).keys.length,
    1,
    'a read-only Secret volume file works',
  );
  await assert.rejects(readKeyringFile(join(dir, 'absent.json')), hasCode('ERR_KEYRING_MISSING'));
});

test('the backend unwraps DEKs wrapped before a rotate and reload, and wraps with the new key', async (t) => {
  const dir = await tempDir(t);
  const path = await newKeyringFile(dir);
  const backend = await createKeyringBackend({ path });
  t.after(() => backend.close());
  const dek = randomBytes(32);
  const old = await backend.wrap({ plaintext: dek });
  assert.equal(old.keyID, await backend.currentKeyID());

  const rotated = rotateKeyring(await readKeyringFile(path), new Date(), randomBytes);
  await writeKeyringFile(path, rotated, { exclusive: false, random: randomBytes });
  assert.equal(await backend.currentKeyID(), old.keyID, 'nothing changes before reload');
  await backend.reload();
  assert.equal(await backend.currentKeyID(), rotated.active);

  assert.deepEqual(await backend.unwrap({ ciphertext: old.ciphertext }), dek);
  assert.deepEqual(await backend.unwrap({ ciphertext: old.ciphertext, keyID: old.keyID }), dek);
  const fresh = await backend.wrap({ plaintext: dek });
  assert.equal(fresh.keyID, rotated.active);
  assert.notDeepEqual(fresh.ciphertext, old.ciphertext);
});

test('the backend refuses unknown key ids, mismatched request key ids and tampering', async (t) => {
  const dir = await tempDir(t);
  const backend = await createKeyringBackend({ path: await newKeyringFile(dir) });
  const other = await createKeyringBackend({ path: await newKeyringFile(await tempDir(t)) });
  t.after(async () => {
    await backend.close();
    await other.close();
  });
  const foreign = await other.wrap({ plaintext: randomBytes(32) });
  await assert.rejects(
    backend.unwrap({ ciphertext: foreign.ciphertext }),
    hasCode('ERR_KEY_UNKNOWN'),
  );
  const mine = await backend.wrap({ plaintext: randomBytes(32) });
  await assert.rejects(
    backend.unwrap({ ciphertext: mine.ciphertext, keyID: foreign.keyID }),
    hasCode('ERR_KEY_ID_MISMATCH'),
  );
  const bad = Buffer.from(mine.ciphertext);
  bad[bad.length - 20]! ^= 0x80;
  await assert.rejects(backend.unwrap({ ciphertext: bad }), DecryptionFailedError);
});

test('a failed reload keeps the old keys in service', async (t) => {
  const dir = await tempDir(t);
  const path = await newKeyringFile(dir);
  const backend = await createKeyringBackend({ path });
  t.after(() => backend.close());
  const keyID = await backend.currentKeyID();
  const wrapped = await backend.wrap({ plaintext: Buffer.from('dek') });
  const good = await readFile(path, 'utf8');

  await writeFile(path, '{"format": "atrest-keyring/v1"', { mode: 0o600 });
  await assert.rejects(backend.reload(), hasCode('ERR_KEYRING_INVALID'));
  await chmod(path, 0o644);
  await writeFile(path, good);
  await assert.rejects(backend.reload(), hasCode('ERR_KEYRING_PERMISSIONS'));
  await chmod(path, 0o600);

  // Same id, different key material: refused, or old data would silently become unreadable.
  const doc = JSON.parse(good) as { keys: { secret: string }[] };
  doc.keys[0]!.secret = randomBytes(32).toString('base64');
  await writeFile(path, JSON.stringify(doc));
  await assert.rejects(backend.reload(), hasCode('ERR_KEYRING_INVALID'));

  assert.equal(await backend.currentKeyID(), keyID);
  assert.deepEqual(await backend.unwrap({ ciphertext: wrapped.ciphertext }), Buffer.from('dek'));
});
