// `atrest serve --backend kmip` end to end: the real CLI over its UNIX socket in front of PyKMIP's
// KMIP server, with TLS client certificates. v1beta1 and v2 round trips; a rotation (a new key of
// the same Name, made with PyKMIP's client) seen in Status; a stopped server failing /healthz (not
// /livez) and recovering, without a plugin restart, once it is back.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { waitFor } from './suite.js';
import { createPyKmip, type PyKmip } from './pykmip.js';
import { startPlugin, type Plugin } from './plugin.js';

const KEY = 'atrest-serve';

describe('atrest serve with the kmip backend', () => {
  let kmip: PyKmip;
  let plugin: Plugin;
  let firstUid: string;
  let createdSecond = 0;

  before(async () => {
    kmip = await createPyKmip();
    firstUid = await kmip.createKey(KEY);
    createdSecond = Math.floor(Date.now() / 1000);
    const config = join(kmip.dir, 'backends.yaml');
    await writeFile(
      config,
      [
        'kmip:',
        `  address: 127.0.0.1:${kmip.port}`,
        `  keyName: ${KEY}`,
        `  caFile: ${join(kmip.dir, 'ca.pem')}`,
        `  clientCertFile: ${join(kmip.dir, 'client.pem')}`,
        `  clientKeyFile: ${join(kmip.dir, 'client-key.pem')}`,
        '  refreshInterval: 300ms',
        '  timeout: 2s',
        '',
      ].join('\n'),
    );
    plugin = await startPlugin(kmip.dir, 'kmip', config);
  });

  after(async () => {
    await plugin?.stop();
    await kmip?.close();
  });

  it('reports the key Unique Identifier as key_id and round-trips v2 with annotations', async () => {
    const s = await plugin.v2.status();
    assert.equal(s.version, 'v2beta1', 'the default Status version, accepted by kube-apiserver 1.27 to 1.37');
    assert.equal(s.keyID, `kmip:${firstUid}`);
    const seed = randomBytes(32);
    const enc = await plugin.v2.encrypt(seed, 'u1');
    assert.equal(enc.keyID, s.keyID);
    assert.ok('local-kek.atrest.io' in enc.annotations);
    const dec = await plugin.v2.decrypt({
      ciphertext: enc.ciphertext,
      uid: 'u2',
      keyID: enc.keyID,
      annotations: enc.annotations,
    });
    assert.deepEqual(dec, seed);
  });

  it('round-trips v1beta1, whose ciphertext alone must be enough', async () => {
    const dek = randomBytes(32);
    assert.deepEqual(await plugin.v1.decrypt(await plugin.v1.encrypt(dek)), dek);
  });

  it('reports a new key_id once a newer key of the same Name is active, and old data still decrypts', async () => {
    const dek = randomBytes(32);
    const old = await plugin.v1.encrypt(dek);
    // PyKMIP dates keys to the second: the new key must be made in a later second to be the newest.
    await waitFor('a new second', () => Math.floor(Date.now() / 1000) > createdSecond);
    const uid = await kmip.createKey(KEY);
    await waitFor(
      'Status to show the new key',
      async () => (await plugin.v2.status()).keyID === `kmip:${uid}`,
    );
    assert.equal((await plugin.v2.encrypt(randomBytes(32), 'u3')).keyID, `kmip:${uid}`);
    assert.deepEqual(await plugin.v1.decrypt(old), dek);
  });

  it('fails /healthz (not /livez) while the KMIP server is stopped, and recovers once it is back', async () => {
    await kmip.stop();
    await waitFor(
      'Status to report the outage',
      async () => (await plugin.v2.status()).healthz !== 'ok',
    );
    assert.match((await plugin.v2.status()).healthz, /kmip.*(reach|closed|timed out)/i);
    assert.equal((await plugin.health('/healthz')).status, 503);
    assert.equal((await plugin.health('/livez')).status, 200);
    await kmip.start();
    await waitFor(
      'Status to recover',
      async () => (await plugin.v2.status()).healthz === 'ok',
      30_000,
    );
    const dek = randomBytes(32);
    assert.deepEqual(await plugin.v1.decrypt(await plugin.v1.encrypt(dek)), dek);
    assert.equal(plugin.process.exitCode, null, 'the plugin kept running');
  });
});
