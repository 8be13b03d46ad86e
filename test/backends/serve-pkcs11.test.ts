// `atrest serve --backend pkcs11 --backend-config FILE` end to end: the real CLI over its UNIX socket,
// in front of a SoftHSM2 token of its own, the PIN read from a file named in the configuration.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  createKmsV1Client,
  createKmsV2Client,
  type KmsV1Client,
  type KmsV2Client,
} from '../../src/kms-client/index.js';
import { waitFor } from './suite.js';
import { createSoftHsmToken, type SoftHsmToken } from './softhsm.js';

const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const LABEL = 'atrest-kek';

describe('atrest serve with the pkcs11 backend', () => {
  let token: SoftHsmToken;
  let plugin: ChildProcess;
  let kmsV1: KmsV1Client;
  let kmsV2: KmsV2Client;
  let stderr = '';
  const status = () => kmsV2.status();

  before(async () => {
    token = createSoftHsmToken();
    token.generateKey(LABEL);
    const config = join(token.dir, 'backends.yaml');
    await writeFile(
      config,
      [
        'pkcs11:',
        `  module: ${token.module}`,
        `  tokenLabel: ${token.tokenLabel}`,
        `  keyLabel: ${LABEL}`,
        `  pinFile: ${token.pinFile}`,
        '  refreshInterval: 300ms',
        '',
      ].join('\n'),
    );
    const socket = join(token.dir, 'kms.sock');
    plugin = spawn(
      process.execPath,
      [
        CLI,
        'serve',
        '--listen',
        `unix://${socket}`,
        '--backend',
        'pkcs11',
        '--backend-config',
        config,
        '--health-listen',
        'off',
      ],
      { env: { ...process.env, SOFTHSM2_CONF: token.conf }, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    plugin
      .stderr!.setEncoding('utf8')
      .on('data', (d: string) => (stderr = (stderr + d).slice(-8000)));
    kmsV1 = createKmsV1Client({ endpoint: `unix://${socket}`, timeoutMs: 10_000 });
    kmsV2 = createKmsV2Client({ endpoint: `unix://${socket}`, timeoutMs: 10_000 });
    await waitFor(
      'the plugin to report healthy',
      async () => (await status().catch(() => undefined))?.healthz === 'ok',
      30_000,
    ).catch((err: unknown) => {
      throw new Error(`${String(err)}\nplugin stderr:\n${stderr}`);
    });
  });

  after(async () => {
    await kmsV1?.close();
    await kmsV2?.close();
    if (plugin !== undefined && plugin.exitCode === null) {
      plugin.kill('SIGTERM');
      await new Promise((r) => plugin.once('exit', r));
    }
    token?.remove();
  });

  it('reports the key label and CKA_ID as key_id and round-trips v2 and v1beta1', async () => {
    const s = await status();
    assert.equal(s.keyID, `pkcs11:${LABEL}:0000002026112801`);
    const seed = randomBytes(32);
    const enc = await kmsV2.encrypt(seed, 'u');
    assert.equal(enc.keyID, s.keyID);
    const dec = await kmsV2.decrypt({
      ciphertext: enc.ciphertext,
      uid: 'u',
      keyID: enc.keyID,
      annotations: enc.annotations,
    });
    assert.deepEqual(dec, seed);
    const dek = randomBytes(32);
    assert.deepEqual(await kmsV1.decrypt(await kmsV1.encrypt(dek)), dek);
  });

  it('reports a key generated in the token later as the new key_id, and still decrypts the old one', async () => {
    const dek = randomBytes(32);
    const old = await kmsV1.encrypt(dek);
    const id = token.generateKey(LABEL);
    await waitFor(
      'Status to show the new key',
      async () => (await status()).keyID === `pkcs11:${LABEL}:${id.toString('hex')}`,
    );
    assert.deepEqual(await kmsV1.decrypt(old), dek);
  });
});
