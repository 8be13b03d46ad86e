// The plugin over a real UNIX socket with a real gRPC client: v1beta1 Version/Encrypt/Decrypt, v2
// Status/Encrypt/Decrypt, the gRPC status of every refusal, and the server staying up after each.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as v1 from '../../src/proto/kms-v1beta1.js';
import * as v2 from '../../src/proto/kms-v2.js';
import { GRPC_CODE, GrpcStatusError } from '../../src/grpc/status.js';
import { createJsonLogger } from '../../src/logger.js';
import {
  readKeyringFile,
  rotateKeyring,
  writeKeyringFile,
} from '../../src/backends/keyring-file.js';
import { stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createKeyringBackend } from '../../src/backends/keyring.js';
import { createKmsService } from '../../src/kms/service.js';
import { startKmsServer } from '../../src/kms/server.js';
import { parseUnixEndpoint } from '../../src/grpc/endpoint.js';
import { createGrpcClient } from '../../src/grpc/client.js';
import { silentLogger } from '../../src/logger.js';
import { newKeyringFile, startInProcessPlugin, tempDir } from './helpers.js';
import { waitUntil } from '../helpers/wait-until.js';

const T = { timeoutMs: 5000 };

function code(expected: number, pattern?: RegExp) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof GrpcStatusError, String(err));
    assert.equal(err.code, expected, `code ${err.code}: ${err.message}`);
    if (pattern !== undefined) assert.match(err.message, pattern);
    return true;
  };
}

for (const authority of ['localhost', '%2Ftmp%2Fatrest%2Fkms.sock']) {
  test(`v1beta1 Version, Encrypt and Decrypt work with :authority ${authority}`, async (t) => {
    const plugin = await startInProcessPlugin(t);
    const c = plugin.client(authority);
    const version = v1.VersionResponse.decode(
      await c.unary(
        v1.V1BETA1_METHODS.version,
        v1.VersionRequest.encode({ version: 'v1beta1' }),
        T,
      ),
    );
    assert.deepEqual(
      { ...version },
      { version: 'v1beta1', runtime_name: 'atrest', runtime_version: '9.9.9-test' },
    );
    const dek = randomBytes(32);
    const enc = v1.EncryptResponse.decode(
      await c.unary(
        v1.V1BETA1_METHODS.encrypt,
        v1.EncryptRequest.encode({ version: 'v1beta1', plain: dek }),
        T,
      ),
    );
    assert.ok(enc.cipher.length > 32 && !enc.cipher.includes(dek));
    const dec = v1.DecryptResponse.decode(
      await c.unary(
        v1.V1BETA1_METHODS.decrypt,
        v1.DecryptRequest.encode({ version: 'v1beta1', cipher: enc.cipher }),
        T,
      ),
    );
    assert.deepEqual(dec.plain, dek);
  });

  test(`v2 Status, Encrypt and Decrypt work with :authority ${authority}`, async (t) => {
    const plugin = await startInProcessPlugin(t);
    const c = plugin.client(authority);
    const status = v2.StatusResponse.decode(
      await c.unary(v2.V2_METHODS.status, v2.StatusRequest.encode({}), T),
    );
    assert.equal(status.version, 'v2beta1');
    assert.equal(status.healthz, 'ok');
    assert.equal(status.key_id, await plugin.backend.currentKeyID());
    const seed = randomBytes(32);
    const uid = '2f2b6b7c-6a7e-4f5e-9d0c-1b2a3c4d5e6f';
    const enc = v2.EncryptResponse.decode(
      await c.unary(v2.V2_METHODS.encrypt, v2.EncryptRequest.encode({ plaintext: seed, uid }), T),
    );
    assert.equal(enc.key_id, status.key_id, "Encrypt's key_id equals Status's");
    assert.ok(enc.ciphertext.length > 0 && enc.ciphertext.length <= 1024);
    assert.deepEqual(enc.annotations, {});
    const dec = v2.DecryptResponse.decode(
      await c.unary(
        v2.V2_METHODS.decrypt,
        v2.DecryptRequest.encode({
          ciphertext: enc.ciphertext,
          uid,
          key_id: enc.key_id,
          annotations: {},
        }),
        T,
      ),
    );
    assert.deepEqual(dec.plaintext, seed);
  });
}

test('distinct Encrypts of the same plaintext give distinct ciphertexts', async (t) => {
  const plugin = await startInProcessPlugin(t);
  const c = plugin.client();
  const seed = randomBytes(32);
  const a = v2.EncryptResponse.decode(
    await c.unary(
      v2.V2_METHODS.encrypt,
      v2.EncryptRequest.encode({ plaintext: seed, uid: 'a' }),
      T,
    ),
  );
  const b = v2.EncryptResponse.decode(
    await c.unary(
      v2.V2_METHODS.encrypt,
      v2.EncryptRequest.encode({ plaintext: seed, uid: 'b' }),
      T,
    ),
  );
  assert.notDeepEqual(a.ciphertext, b.ciphertext);
});

test('bad requests get INVALID_ARGUMENT with a clear message and the server keeps serving', async (t) => {
  const plugin = await startInProcessPlugin(t);
  const c = plugin.client();
  await assert.rejects(
    c.unary(v1.V1BETA1_METHODS.version, v1.VersionRequest.encode({ version: 'v2' }), T),
    code(GRPC_CODE.INVALID_ARGUMENT, /unsupported KMS API version "v2"/),
  );
  await assert.rejects(
    c.unary(
      v1.V1BETA1_METHODS.encrypt,
      v1.EncryptRequest.encode({ version: 'v1', plain: Buffer.from('x') }),
      T,
    ),
    code(GRPC_CODE.INVALID_ARGUMENT, /version/),
  );
  await assert.rejects(
    c.unary(v1.V1BETA1_METHODS.encrypt, v1.EncryptRequest.encode({ version: 'v1beta1' }), T),
    code(GRPC_CODE.INVALID_ARGUMENT, /empty/),
  );
  await assert.rejects(
    c.unary(v1.V1BETA1_METHODS.decrypt, v1.DecryptRequest.encode({ version: 'v1beta1' }), T),
    code(GRPC_CODE.INVALID_ARGUMENT, /empty/),
  );
  await assert.rejects(
    c.unary(v2.V2_METHODS.encrypt, v2.EncryptRequest.encode({ uid: 'u' }), T),
    code(GRPC_CODE.INVALID_ARGUMENT, /empty/),
  );
  await assert.rejects(
    c.unary(
      v2.V2_METHODS.decrypt,
      v2.DecryptRequest.encode({ ciphertext: Buffer.from('ATK'), uid: 'u' }),
      T,
    ),
    code(GRPC_CODE.INVALID_ARGUMENT, /key_id/),
  );
  // Malformed protobuf: a length-delimited field running past the end.
  await assert.rejects(
    c.unary(v2.V2_METHODS.encrypt, Buffer.from([0x0a, 0x7f, 0x01]), T),
    code(GRPC_CODE.INVALID_ARGUMENT),
  );
  await assert.rejects(
    c.unary(
      v1.V1BETA1_METHODS.decrypt,
      v1.DecryptRequest.encode({ version: 'v1beta1', cipher: Buffer.from('not ours') }),
      T,
    ),
    code(GRPC_CODE.INVALID_ARGUMENT, /atrest keyring/),
  );
  // A plaintext whose wrap would exceed the 1024 bytes kube-apiserver accepts.
  await assert.rejects(
    c.unary(
      v2.V2_METHODS.encrypt,
      v2.EncryptRequest.encode({ plaintext: randomBytes(2000), uid: 'u' }),
      T,
    ),
    code(GRPC_CODE.INVALID_ARGUMENT, /1024/),
  );
  const ok = v2.StatusResponse.decode(await c.unary(v2.V2_METHODS.status, Buffer.alloc(0), T));
  assert.equal(ok.healthz, 'ok');
});

test('messages above 64 KiB are refused and the server keeps serving', async (t) => {
  const plugin = await startInProcessPlugin(t);
  const c = plugin.client();
  await assert.rejects(
    c.unary(
      v1.V1BETA1_METHODS.encrypt,
      v1.EncryptRequest.encode({ version: 'v1beta1', plain: randomBytes(64 * 1024 + 1) }),
      T,
    ),
    code(GRPC_CODE.RESOURCE_EXHAUSTED),
  );
  const fits = v1.EncryptRequest.encode({ version: 'v1beta1', plain: randomBytes(60 * 1024) });
  assert.ok(
    v1.EncryptResponse.decode(await c.unary(v1.V1BETA1_METHODS.encrypt, fits, T)).cipher.length > 0,
  );
});

test('Decrypt refuses an unknown key (NOT_FOUND), tampering (DATA_LOSS) and a disagreeing key_id', async (t) => {
  const plugin = await startInProcessPlugin(t);
  const other = await startInProcessPlugin(t);
  const c = plugin.client();
  const foreign = v2.EncryptResponse.decode(
    await other
      .client()
      .unary(
        v2.V2_METHODS.encrypt,
        v2.EncryptRequest.encode({ plaintext: randomBytes(32), uid: 'x' }),
        T,
      ),
  );
  await assert.rejects(
    c.unary(
      v2.V2_METHODS.decrypt,
      v2.DecryptRequest.encode({
        ciphertext: foreign.ciphertext,
        uid: 'x',
        key_id: foreign.key_id,
      }),
      T,
    ),
    code(GRPC_CODE.NOT_FOUND, /not in the keyring/),
  );
  await assert.rejects(
    c.unary(
      v1.V1BETA1_METHODS.decrypt,
      v1.DecryptRequest.encode({ version: 'v1beta1', cipher: foreign.ciphertext }),
      T,
    ),
    code(GRPC_CODE.NOT_FOUND),
  );
  const mine = v2.EncryptResponse.decode(
    await c.unary(
      v2.V2_METHODS.encrypt,
      v2.EncryptRequest.encode({ plaintext: randomBytes(32), uid: 'y' }),
      T,
    ),
  );
  const tampered = Buffer.from(mine.ciphertext);
  tampered[tampered.length - 1]! ^= 1;
  await assert.rejects(
    c.unary(
      v2.V2_METHODS.decrypt,
      v2.DecryptRequest.encode({ ciphertext: tampered, uid: 'y', key_id: mine.key_id }),
      T,
    ),
    code(GRPC_CODE.DATA_LOSS, /decryption failed/),
  );
  await assert.rejects(
    c.unary(
      v2.V2_METHODS.decrypt,
      v2.DecryptRequest.encode({ ciphertext: mine.ciphertext, uid: 'y', key_id: foreign.key_id }),
      T,
    ),
    code(GRPC_CODE.INVALID_ARGUMENT, /does not match/),
  );
});

test('after rotate and reload, Status and Encrypt report the new key id and old DEKs still decrypt', async (t) => {
  const plugin = await startInProcessPlugin(t);
  const c = plugin.client();
  const dek = randomBytes(32);
  const old = v2.EncryptResponse.decode(
    await c.unary(v2.V2_METHODS.encrypt, v2.EncryptRequest.encode({ plaintext: dek, uid: 'u' }), T),
  );
  const rotated = rotateKeyring(await readKeyringFile(plugin.keyringPath), new Date(), randomBytes);
  await writeKeyringFile(plugin.keyringPath, rotated, { exclusive: false, random: randomBytes });
  await plugin.service.reload();
  const status = v2.StatusResponse.decode(await c.unary(v2.V2_METHODS.status, Buffer.alloc(0), T));
  assert.equal(status.key_id, rotated.active);
  assert.notEqual(status.key_id, old.key_id);
  const fresh = v2.EncryptResponse.decode(
    await c.unary(v2.V2_METHODS.encrypt, v2.EncryptRequest.encode({ plaintext: dek, uid: 'u' }), T),
  );
  assert.equal(fresh.key_id, status.key_id);
  const back = v2.DecryptResponse.decode(
    await c.unary(
      v2.V2_METHODS.decrypt,
      v2.DecryptRequest.encode({ ciphertext: old.ciphertext, uid: 'u', key_id: old.key_id }),
      T,
    ),
  );
  assert.deepEqual(back.plaintext, dek);
});

test('unknown methods get UNIMPLEMENTED', async (t) => {
  const plugin = await startInProcessPlugin(t);
  await assert.rejects(
    plugin.client().unary('/v2.KeyManagementService/Nope', Buffer.alloc(0), T),
    code(GRPC_CODE.UNIMPLEMENTED),
  );
});

test('each call is logged as JSON with method, uid, duration and outcome but no secrets', async (t) => {
  const lines: string[] = [];
  const plugin = await startInProcessPlugin(t, {
    logger: createJsonLogger((l) => lines.push(l), 'debug'),
  });
  const c = plugin.client();
  const seed = randomBytes(32);
  const uid = 'd1c2b3a4-0000-4000-8000-000000000001';
  const enc = v2.EncryptResponse.decode(
    await c.unary(v2.V2_METHODS.encrypt, v2.EncryptRequest.encode({ plaintext: seed, uid }), T),
  );
  await assert.rejects(
    c.unary(
      v2.V2_METHODS.decrypt,
      v2.DecryptRequest.encode({ ciphertext: enc.ciphertext, uid: 'bad', key_id: 'other' }),
      T,
    ),
  );
  const calls = lines
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l['msg'] === 'kms call');
  const encLine = calls.find((l) => l['method'] === v2.V2_METHODS.encrypt)!;
  assert.equal(encLine['uid'], uid);
  assert.equal(encLine['outcome'], 'OK');
  assert.equal(encLine['level'], 'info');
  assert.equal(typeof encLine['durationMs'], 'number');
  const decLine = calls.find((l) => l['method'] === v2.V2_METHODS.decrypt)!;
  assert.equal(decLine['outcome'], 'INVALID_ARGUMENT');
  assert.equal(decLine['uid'], 'bad');
  assert.equal(decLine['level'], 'warn');
  const all = lines.join('');
  for (const secret of [seed, enc.ciphertext]) {
    assert.ok(!all.includes(secret.toString('hex')) && !all.includes(secret.toString('base64')));
  }
  const keyring = await readKeyringFile(plugin.keyringPath);
  assert.ok(!all.includes(keyring.keys[0]!.secret.toString('base64')));
});

test('at --log-level warn a successful call writes no line and a refused one still does', async (t) => {
  const lines: string[] = [];
  const logger = createJsonLogger((l) => lines.push(l), 'warn');
  assert.equal(logger.enabled?.('info'), false);
  assert.equal(logger.enabled?.('warn'), true);
  const plugin = await startInProcessPlugin(t, { logger });
  const c = plugin.client();
  const enc = v2.EncryptResponse.decode(
    await c.unary(v2.V2_METHODS.encrypt, v2.EncryptRequest.encode({ plaintext: randomBytes(32), uid: 'u-ok' }), T),
  );
  await c.unary(v2.V2_METHODS.decrypt, v2.DecryptRequest.encode({ ciphertext: enc.ciphertext, uid: 'u-ok', key_id: enc.key_id }), T);
  await assert.rejects(
    c.unary(v2.V2_METHODS.decrypt, v2.DecryptRequest.encode({ ciphertext: enc.ciphertext, uid: 'u-bad', key_id: 'other' }), T),
  );
  const calls = lines
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l['msg'] === 'kms call');
  assert.deepEqual(
    calls.map((l) => [l['uid'], l['outcome'], l['level']]),
    [['u-bad', 'INVALID_ARGUMENT', 'warn']],
  );
});

test('a reload that fails leaves the plugin serving and healthy with the old keys', async (t) => {
  const plugin = await startInProcessPlugin(t);
  await writeFile(plugin.keyringPath, 'garbage');
  await assert.rejects(plugin.service.reload());
  const s = v2.StatusResponse.decode(
    await plugin.client().unary(v2.V2_METHODS.status, Buffer.alloc(0), T),
  );
  assert.equal(s.healthz, 'ok');
});

test('close stops accepting and removes the socket at once, but lets in-flight calls finish', async (t) => {
  const dir = await tempDir(t);
  const inner = await createKeyringBackend({ path: await newKeyringFile(dir) });
  t.after(() => inner.close());
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let entered!: () => void;
  const inFlight = new Promise<void>((r) => (entered = r));
  // An injected delay: the backend holds one wrap until the test releases it.
  const slow = {
    ...inner,
    name: 'slow',
    async wrap(req: Parameters<typeof inner.wrap>[0]) {
      if (req.uid === 'slow') {
        entered();
        await gate;
      }
      return inner.wrap(req);
    },
  };
  const service = createKmsService({ backend: slow, version: 't', logger: silentLogger });
  const socketPath = join(dir, 'kms.sock');
  const server = await startKmsServer({
    endpoint: parseUnixEndpoint(`unix://${socketPath}`),
    service,
    logger: silentLogger,
  });
  const c = createGrpcClient({ address: socketPath });
  t.after(() => c.close());
  const pending = c.unary(
    v2.V2_METHODS.encrypt,
    v2.EncryptRequest.encode({ plaintext: randomBytes(32), uid: 'slow' }),
    T,
  );
  await inFlight;
  let answered = false;
  void pending.finally(() => (answered = true)).catch(() => {});
  const closing = server.close(5000);
  await waitUntil('the socket file to go', () =>
    stat(socketPath).then(
      () => false,
      (err: NodeJS.ErrnoException) => err.code === 'ENOENT',
    ),
  );
  // The backend holds the call until release(): it is still running with the socket gone.
  assert.equal(answered, false, 'the call is still running');
  release();
  const answer = v2.EncryptResponse.decode(await pending);
  assert.ok(answer.ciphertext.length > 0);
  await closing;
});
