// `atrest keys init|rotate|list|retire` as a real process on real files.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli, tempDir } from '../kms/helpers.js';

interface Listed {
  development: boolean;
  keys: { id: string; created: string; active: boolean }[];
  retired: { id: string }[];
}

test('keys init creates a 0600 keyring (and a 0700 directory) and refuses to overwrite it', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'etc', 'keyring.json');
  const r = await runCli(t, ['keys', 'init', '--keyring', path]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /created keyring .* with active key k\d{8}T\d{6}Z-[0-9a-f]{16}/);
  assert.equal((await stat(path)).mode & 0o777, 0o600);
  assert.equal((await stat(join(dir, 'etc'))).mode & 0o777, 0o700);
  const before = await readFile(path, 'utf8');
  const again = await runCli(t, ['keys', 'init', '--keyring', path]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /already exists; refusing to overwrite/);
  assert.equal(await readFile(path, 'utf8'), before);
});

test('keys rotate and list show ids, creation times and the active key, never key bytes', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'keyring.json');
  await runCli(t, ['keys', 'init', '--keyring', path]);
  const rot = await runCli(t, ['keys', 'rotate', '--keyring', path]);
  assert.equal(rot.code, 0, rot.stderr);
  assert.match(rot.stdout, /active key is now/);
  const json = await runCli(t, ['keys', 'list', '--keyring', path, '-o', 'json']);
  const listed = JSON.parse(json.stdout) as Listed;
  assert.equal(listed.keys.length, 2);
  assert.deepEqual(
    listed.keys.map((k) => k.active),
    [false, true],
  );
  const table = await runCli(t, ['keys', 'list', '--keyring', path]);
  const lines = table.stdout.trim().split('\n');
  assert.match(lines[0]!, /^ID\s+CREATED\s+ACTIVE$/);
  assert.ok(lines[2]!.startsWith(listed.keys[1]!.id) && lines[2]!.endsWith('yes'));
  const doc = JSON.parse(await readFile(path, 'utf8')) as { keys: { secret: string }[] };
  for (const k of doc.keys) {
    assert.ok(!table.stdout.includes(k.secret) && !json.stdout.includes(k.secret));
  }
});

test('keys retire warns and refuses without --force, removes the key with it', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'keyring.json');
  await runCli(t, ['keys', 'init', '--keyring', path]);
  await runCli(t, ['keys', 'rotate', '--keyring', path]);
  const first = (
    JSON.parse(
      (await runCli(t, ['keys', 'list', '--keyring', path, '-o', 'json'])).stdout,
    ) as Listed
  ).keys[0]!.id;
  const no = await runCli(t, ['keys', 'retire', first, '--keyring', path]);
  assert.equal(no.code, 1);
  assert.match(no.stderr, /WARNING: every DEK wrapped by key .* becomes permanently unreadable/);
  assert.match(no.stderr, /--force/);
  const yes = await runCli(t, ['keys', 'retire', first, '--keyring', path, '--force']);
  assert.equal(yes.code, 0, yes.stderr);
  const listed = JSON.parse(
    (await runCli(t, ['keys', 'list', '--keyring', path, '-o', 'json'])).stdout,
  ) as Listed;
  assert.deepEqual(listed.keys.map((k) => k.id).includes(first), false);
  assert.deepEqual(
    listed.retired.map((r) => r.id),
    [first],
  );
  const active = listed.keys[0]!.id;
  const activeRetire = await runCli(t, ['keys', 'retire', active, '--keyring', path, '--force']);
  assert.equal(activeRetire.code, 1);
  assert.match(activeRetire.stderr, /is the active key/);
});

test('keys commands refuse a keyring readable by others', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'keyring.json');
  await runCli(t, ['keys', 'init', '--keyring', path]);
  await chmod(path, 0o644);
  const r = await runCli(t, ['keys', 'list', '--keyring', path]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /chmod 600/);
});
