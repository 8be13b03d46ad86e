// `atrest serve --backend pkcs11 --backend-config FILE` end to end: the real CLI over its UNIX socket,
// in front of a SoftHSM2 token of its own, the PIN read from a file named in the configuration.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as v1 from '../../src/proto/kms-v1beta1.js';
import * as v2 from '../../src/proto/kms-v2.js';
import { createGrpcClient, type GrpcClient } from '../../src/grpc/client.js';
import { waitFor } from './suite.js';
import { createSoftHsmToken, type SoftHsmToken } from './softhsm.js';

const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const T = { timeoutMs: 10_000 };
const LABEL = 'atrest-kek';

describe('atrest serve with the pkcs11 backend', () => {
  let token: SoftHsmToken;
  let plugin: ChildProcess;
  let client: GrpcClient;
  let stderr = '';

  async function status(): Promise<{ healthz: string; key_id: string; version: string }> {
    return v2.StatusResponse.decode(
      await client.unary(v2.V2_METHODS.status, v2.StatusRequest.encode({}), T),
    );
  }

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
    client = createGrpcClient({ address: socket });
    await waitFor(
      'the plugin to report healthy',
      async () => (await status().catch(() => undefined))?.healthz === 'ok',
      30_000,
    ).catch((err: unknown) => {
      throw new Error(`${String(err)}\nplugin stderr:\n${stderr}`);
    });
  });

  after(async () => {
    await client?.close();
    if (plugin !== undefined && plugin.exitCode === null) {
      plugin.kill('SIGTERM');
      await new Promise((r) => plugin.once('exit', r));
    }
    token?.remove();
  });

  it('reports the key label and CKA_ID as key_id and round-trips v2 and v1beta1', async () => {
    const s = await status();
    assert.equal(s.key_id, `pkcs11:${LABEL}:0000002026112801`);
    const seed = randomBytes(32);
    const enc = v2.EncryptResponse.decode(
      await client.unary(
        v2.V2_METHODS.encrypt,
        v2.EncryptRequest.encode({ plaintext: seed, uid: 'u' }),
        T,
      ),
    );
    assert.equal(enc.key_id, s.key_id);
    const dec = v2.DecryptResponse.decode(
      await client.unary(
        v2.V2_METHODS.decrypt,
        v2.DecryptRequest.encode({
          ciphertext: enc.ciphertext,
          uid: 'u',
          key_id: enc.key_id,
          annotations: enc.annotations,
        }),
        T,
      ),
    );
    assert.deepEqual(Buffer.from(dec.plaintext), seed);
    const dek = randomBytes(32);
    const c1 = v1.EncryptResponse.decode(
      await client.unary(
        v1.V1BETA1_METHODS.encrypt,
        v1.EncryptRequest.encode({ version: 'v1beta1', plain: dek }),
        T,
      ),
    );
    const p1 = v1.DecryptResponse.decode(
      await client.unary(
        v1.V1BETA1_METHODS.decrypt,
        v1.DecryptRequest.encode({ version: 'v1beta1', cipher: c1.cipher }),
        T,
      ),
    );
    assert.deepEqual(Buffer.from(p1.plain), dek);
  });

  it('reports a key generated in the token later as the new key_id, and still decrypts the old one', async () => {
    const dek = randomBytes(32);
    const old = v1.EncryptResponse.decode(
      await client.unary(
        v1.V1BETA1_METHODS.encrypt,
        v1.EncryptRequest.encode({ version: 'v1beta1', plain: dek }),
        T,
      ),
    );
    const id = token.generateKey(LABEL);
    await waitFor(
      'Status to show the new key',
      async () => (await status()).key_id === `pkcs11:${LABEL}:${id.toString('hex')}`,
    );
    const back = v1.DecryptResponse.decode(
      await client.unary(
        v1.V1BETA1_METHODS.decrypt,
        v1.DecryptRequest.encode({ version: 'v1beta1', cipher: old.cipher }),
        T,
      ),
    );
    assert.deepEqual(Buffer.from(back.plain), dek);
  });
});
