// The two-step key change for several control-plane nodes, as real processes on real files:
// `keys add` (inactive), `keys activate ID`, the keyring fingerprint in `keys list` and in a running
// plugin's /metrics, and a SIGHUP that only switches keys when the new file holds them.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createGrpcClient } from '../../src/grpc/client.js';
import * as v2 from '../../src/proto/kms-v2.js';
import { keyIDHash } from '../../src/health/plugin-metrics.js';
import { readKeyringFile } from '../../src/backends/keyring-file.js';
import { httpGet, newKeyringFile, runCli, spawnCli, tempDir } from '../kms/helpers.js';

interface Listed {
  fingerprint: string;
  keys: { id: string; active: boolean }[];
}

async function list(t: Parameters<typeof runCli>[0], path: string): Promise<Listed> {
  const r = await runCli(t, ['keys', 'list', '--keyring', path, '-o', 'json']);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Listed;
}

test('keys add prints only the new id on stdout, leaves the active key, and changes the fingerprint', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'keyring.json');
  await runCli(t, ['keys', 'init', '--keyring', path]);
  const before = await list(t, path);
  const add = await runCli(t, ['keys', 'add', '--keyring', path]);
  assert.equal(add.code, 0, add.stderr);
  const id = add.stdout.trim();
  assert.match(id, /^k\d{8}T\d{6}Z-[0-9a-f]{16}$/);
  assert.match(
    add.stderr,
    new RegExp(`added key ${id} \\(not active: the active key is still ${before.keys[0]!.id}\\)`),
  );
  const after = await list(t, path);
  assert.deepEqual(
    after.keys.map((k) => [k.id, k.active]),
    [
      [before.keys[0]!.id, true],
      [id, false],
    ],
  );
  assert.notEqual(after.fingerprint, before.fingerprint);
  assert.ok(add.stderr.includes(`keyring fingerprint: ${after.fingerprint}`));
  assert.ok(add.stderr.includes(`atrest keys activate ${id}`));
  const table = await runCli(t, ['keys', 'list', '--keyring', path]);
  assert.match(table.stdout, new RegExp(`\\nfingerprint: ${after.fingerprint} `));
  const doc = JSON.parse(await readFile(path, 'utf8')) as { keys: { secret: string }[] };
  for (const k of doc.keys) {
    for (const out of [add.stdout, add.stderr, table.stdout]) assert.ok(!out.includes(k.secret));
  }
});

test('keys activate switches to a held key, keeps the fingerprint, and refuses ids it cannot use', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'keyring.json');
  await runCli(t, ['keys', 'init', '--keyring', path]);
  const id = (await runCli(t, ['keys', 'add', '--keyring', path])).stdout.trim();
  const before = await list(t, path);

  const unknown = await runCli(t, [
    'keys',
    'activate',
    'k20990101T000000Z-ffffffffffffffff',
    '--keyring',
    path,
  ]);
  assert.equal(unknown.code, 1);
  assert.match(
    unknown.stderr,
    /no key with id k20990101T000000Z-ffffffffffffffff in the keyring \(it holds .*\) \(ERR_KEY_UNKNOWN\)/,
  );

  const ok = await runCli(t, ['keys', 'activate', id, '--keyring', path]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, new RegExp(`active key is now ${id} \\(previous: ${before.keys[0]!.id}`));
  const after = await list(t, path);
  assert.equal(after.fingerprint, before.fingerprint);
  assert.deepEqual(
    after.keys.map((k) => k.active),
    [false, true],
  );

  const again = await runCli(t, ['keys', 'activate', id, '--keyring', path]);
  assert.equal(again.code, 0);
  assert.match(again.stdout, /already the active key; nothing changed/);

  const old = before.keys[0]!.id;
  assert.equal((await runCli(t, ['keys', 'retire', old, '--keyring', path, '--force'])).code, 0);
  const retired = await runCli(t, ['keys', 'activate', old, '--keyring', path]);
  assert.equal(retired.code, 1);
  assert.match(
    retired.stderr,
    new RegExp(`key ${old} was retired at .*: its key material is gone`),
  );
  assert.equal((await readKeyringFile(path)).active, id, 'a refused activate writes nothing');
});

test('keys rotate still adds and activates in one step, and says it is for a single node', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'keyring.json');
  await runCli(t, ['keys', 'init', '--keyring', path]);
  const r = await runCli(t, ['keys', 'rotate', '--keyring', path]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /more than one control-plane node use\n"atrest keys add"/);
  const listed = await list(t, path);
  assert.deepEqual(
    listed.keys.map((k) => k.active),
    [false, true],
  );
});

/** Waits until the plugin has logged `n` successful reloads (it says so on stderr). */
async function reloadCount(proc: ReturnType<typeof spawnCli>, n: number): Promise<void> {
  const count = (): number => proc.stderr().split('"msg":"reloaded keys"').length - 1;
  while (count() < n) {
    if (proc.child.exitCode !== null) throw new Error(`plugin exited:\n${proc.stderr()}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function metricLine(health: string, name: string): Promise<string> {
  const m = await httpGet(`${health}/metrics`);
  const line = m.body.split('\n').find((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `));
  assert.ok(line !== undefined, `${name} in /metrics`);
  return line;
}

test('two plugins with copies of one keyring export the same fingerprint; add + copy + SIGHUP keeps the active key', async (t) => {
  const dir = await tempDir(t, 'atrest-ha-');
  const keyringA = await newKeyringFile(dir, 'a.json');
  const keyringB = join(dir, 'b.json');
  await copyFile(keyringA, keyringB);
  const start = async (name: string, keyring: string) => {
    const socket = join(dir, name, 'kms.sock');
    const proc = spawnCli(t, [
      'serve',
      '--listen',
      `unix://${socket}`,
      '--keyring',
      keyring,
      '--health-listen',
      '127.0.0.1:0',
    ]);
    const serving = await proc.waitForLog('serving');
    const client = createGrpcClient({ address: socket });
    t.after(() => client.close());
    return { proc, serving, client, health: `http://${String(serving['health'])}` };
  };
  const a = await start('a', keyringA);
  const b = await start('b', keyringB);
  const listed = await list(t, keyringA);
  const active = listed.keys[0]!.id;
  const info = `atrest_keyring_info{fingerprint="${listed.fingerprint}",active_key_id_hash="${keyIDHash(active)}"} 1`;
  assert.equal(a.serving['keyringFingerprint'], listed.fingerprint);
  assert.equal(await metricLine(a.health, 'atrest_keyring_info'), info);
  assert.equal(await metricLine(b.health, 'atrest_keyring_info'), info);
  assert.equal(await metricLine(a.health, 'atrest_keyring_keys'), 'atrest_keyring_keys 1');

  const added = (await runCli(t, ['keys', 'add', '--keyring', keyringA])).stdout.trim();
  const newFingerprint = (await list(t, keyringA)).fingerprint;
  a.proc.child.kill('SIGHUP');
  const reloaded = await a.proc.waitForLog('reloaded keys');
  assert.equal(reloaded['keyringFingerprint'], newFingerprint);
  assert.equal(reloaded['activeKeyID'], active, 'an added key is not used for wrapping');
  // Before the copy reaches node B the fingerprints differ: what an operator checks before activating.
  assert.notEqual(
    await metricLine(a.health, 'atrest_keyring_info'),
    await metricLine(b.health, 'atrest_keyring_info'),
  );
  await copyFile(keyringA, keyringB);
  b.proc.child.kill('SIGHUP');
  await b.proc.waitForLog('reloaded keys');
  assert.equal(
    await metricLine(b.health, 'atrest_keyring_info'),
    `atrest_keyring_info{fingerprint="${newFingerprint}",active_key_id_hash="${keyIDHash(active)}"} 1`,
  );
  assert.equal(await metricLine(b.health, 'atrest_keyring_keys'), 'atrest_keyring_keys 2');

  // B can already unwrap what A will wrap once the key is active: activate on A only, reload A.
  assert.equal((await runCli(t, ['keys', 'activate', added, '--keyring', keyringA])).code, 0);
  a.proc.child.kill('SIGHUP');
  await reloadCount(a.proc, 2);
  const T = { timeoutMs: 5000 };
  const status = async (c: typeof a.client) =>
    v2.StatusResponse.decode(await c.unary(v2.V2_METHODS.status, Buffer.alloc(0), T));
  assert.equal((await status(a.client)).key_id, added);
  const enc = v2.EncryptResponse.decode(
    await a.client.unary(
      v2.V2_METHODS.encrypt,
      v2.EncryptRequest.encode({ plaintext: Buffer.from('seed'), uid: 'u1' }),
      T,
    ),
  );
  assert.equal(enc.key_id, added);
  const dec = v2.DecryptResponse.decode(
    await b.client.unary(
      v2.V2_METHODS.decrypt,
      v2.DecryptRequest.encode({ ciphertext: enc.ciphertext, uid: 'u2', key_id: enc.key_id }),
      T,
    ),
  );
  assert.deepEqual(dec.plaintext, Buffer.from('seed'));
  assert.equal(
    (await status(b.client)).key_id,
    active,
    'B still wraps with the old key until its reload',
  );
});
