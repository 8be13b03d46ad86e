// `atrest serve --backend vault-transit` end to end: the real CLI over its UNIX socket in front of a
// real OpenBao server with Raft storage, reached with a least-privilege token from a file. v1beta1 and
// v2 round trips; a rotation with the bao CLI seen in Status; a sealed server failing /healthz (not
// /livez) and recovering when unsealed; a replaced token file picked up on SIGHUP.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { waitFor } from './suite.js';
import { createOpenBao, provisionTransit, transitToken, type OpenBao } from './openbao.js';
import { startPlugin, type Plugin } from './plugin.js';

const KEY = 'atrest-serve';

describe('atrest serve with the vault-transit backend', () => {
  let bao: OpenBao;
  let plugin: Plugin;
  let tokenFile: string;
  let token: string;

  before(async () => {
    bao = await createOpenBao('file');
    await provisionTransit(bao, KEY);
    tokenFile = join(bao.dir, 'atrest-token');
    token = await transitToken(bao, KEY);
    await writeFile(tokenFile, token + '\n', { mode: 0o600 });
    const config = join(bao.dir, 'backends.yaml');
    await writeFile(
      config,
      [
        'vault-transit:',
        `  address: ${bao.address}`,
        '  mount: transit',
        `  keyName: ${KEY}`,
        '  auth:',
        '    method: token',
        `    tokenFile: ${tokenFile}`,
        '  refreshInterval: 300ms',
        '  timeout: 1s',
        '',
      ].join('\n'),
    );
    plugin = await startPlugin(bao.dir, 'vault-transit', config);
  });

  after(async () => {
    await plugin?.stop();
    await bao?.close();
  });

  it('reports the Transit key version as key_id and round-trips v2 with annotations', async () => {
    const s = await plugin.v2.status();
    assert.equal(s.version, 'v2beta1', 'the default Status version, accepted by kube-apiserver 1.27 to 1.37');
    assert.equal(s.keyID, `vault-transit:transit/${KEY}:v1`);
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

  it('reports a new key_id after "bao write -f transit/keys/NAME/rotate", and old data still decrypts', async () => {
    const dek = randomBytes(32);
    const old = await plugin.v1.encrypt(dek);
    await bao.cli('write', '-f', `transit/keys/${KEY}/rotate`);
    await waitFor('Status to show v2', async () =>
      (await plugin.v2.status()).keyID.endsWith(':v2'),
    );
    assert.equal(
      (await plugin.v2.encrypt(randomBytes(32), 'u3')).keyID,
      `vault-transit:transit/${KEY}:v2`,
    );
    assert.deepEqual(await plugin.v1.decrypt(old), dek);
  });

  it('fails /healthz (not /livez) while OpenBao is sealed, and recovers once unsealed', async () => {
    await bao.seal();
    await waitFor(
      'Status to report the sealed server',
      async () => (await plugin.v2.status()).healthz !== 'ok',
    );
    assert.match((await plugin.v2.status()).healthz, /vault-transit.*503.*sealed/i);
    const healthz = await plugin.health('/healthz');
    assert.equal(healthz.status, 503);
    assert.equal((await plugin.health('/livez')).status, 200);
    await bao.unseal();
    await waitFor(
      'Status to recover',
      async () => (await plugin.v2.status()).healthz === 'ok',
      30_000,
    );
    assert.equal((await plugin.health('/healthz')).status, 200);
    assert.equal(plugin.process.exitCode, null, 'the plugin kept running');
  });

  it('reports a revoked token, and re-reads the token file on SIGHUP', async () => {
    await bao.api('POST', 'auth/token/revoke', { token });
    await waitFor(
      'Status to report the revoked token',
      async () => (await plugin.v2.status()).healthz !== 'ok',
    );
    assert.match((await plugin.v2.status()).healthz, /403|token/);
    assert.equal((await plugin.health('/livez')).status, 200);
    const fresh = await transitToken(bao, KEY);
    await writeFile(tokenFile, fresh + '\n');
    plugin.process.kill('SIGHUP');
    await waitFor(
      'Status to recover after SIGHUP',
      async () => (await plugin.v2.status()).healthz === 'ok',
    );
    const dek = randomBytes(32);
    assert.deepEqual(await plugin.v1.decrypt(await plugin.v1.encrypt(dek)), dek);
    assert.ok(
      !plugin.stderr().includes(fresh) && !plugin.stderr().includes(token),
      'no token in logs',
    );
  });
});
