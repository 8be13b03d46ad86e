import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { AtrestError } from '../../src/errors.js';
import { GRPC_CODE, GrpcStatusError } from '../../src/grpc/status.js';
import { createKmsV2Client, newUID } from '../../src/kms-client/index.js';
import {
  DecryptRequest,
  DecryptResponse,
  EncryptRequest,
  EncryptResponse,
  StatusResponse,
  V2_METHODS,
} from '../../src/proto/kms-v2.js';
import { startFixture } from '../grpc/fixture.js';

const seen: { method: string; uid?: string; keyID?: string; annotations?: Record<string, Buffer>; authority: string }[] = [];
const fx = await startFixture({
  maxMessageBytes: 64 * 1024,
  handlers: new Map([
    [
      V2_METHODS.status,
      async (call) => {
        seen.push({ method: 'Status', authority: call.authority });
        return StatusResponse.encode({ version: 'v2', healthz: 'ok', key_id: 'key-7' });
      },
    ],
    [
      V2_METHODS.encrypt,
      async (call) => {
        const req = EncryptRequest.decode(call.message);
        seen.push({ method: 'Encrypt', uid: req.uid, authority: call.authority });
        return EncryptResponse.encode({
          ciphertext: Buffer.concat([Buffer.from('wrapped:'), req.plaintext]),
          key_id: 'key-7',
          annotations: { 'kms.example.io': Buffer.from('audit-1') },
        });
      },
    ],
    [
      V2_METHODS.decrypt,
      async (call) => {
        const req = DecryptRequest.decode(call.message);
        seen.push({ method: 'Decrypt', uid: req.uid, keyID: req.key_id, annotations: req.annotations, authority: call.authority });
        if (req.key_id !== 'key-7') throw new GrpcStatusError(GRPC_CODE.NOT_FOUND, 'unknown key id');
        return DecryptResponse.encode({ plaintext: req.ciphertext.subarray('wrapped:'.length) });
      },
    ],
  ]),
});
after(() => fx.cleanup());

test('maps Status, Encrypt and Decrypt with uid, key id and annotations', async () => {
  seen.length = 0;
  const kms = createKmsV2Client({ endpoint: `unix://${fx.address}`, timeoutMs: 3000 });
  try {
    assert.deepEqual(await kms.status(), { version: 'v2', healthz: 'ok', keyID: 'key-7' });
    const seed = Buffer.alloc(32, 1);
    const uid = newUID();
    const enc = await kms.encrypt(seed, uid);
    assert.deepEqual(enc, {
      ciphertext: Buffer.concat([Buffer.from('wrapped:'), seed]),
      keyID: 'key-7',
      annotations: { 'kms.example.io': Buffer.from('audit-1') },
    });
    const uid2 = newUID();
    const plain = await kms.decrypt({ ciphertext: enc.ciphertext, uid: uid2, keyID: enc.keyID, annotations: enc.annotations });
    assert.deepEqual(plain, seed);
    assert.deepEqual(
      seen.map((s) => [s.method, s.uid, s.keyID, s.authority]),
      [
        ['Status', undefined, undefined, 'localhost'],
        ['Encrypt', uid, undefined, 'localhost'],
        ['Decrypt', uid2, 'key-7', 'localhost'],
      ],
    );
    assert.deepEqual(seen[2]?.annotations, { 'kms.example.io': Buffer.from('audit-1') });
  } finally {
    await kms.close();
  }
});

test('turns a gRPC error into ERR_KMS_CALL_FAILED naming the method and the code', async () => {
  const kms = createKmsV2Client({ endpoint: `unix://${fx.address}`, timeoutMs: 3000 });
  try {
    await assert.rejects(
      kms.decrypt({ ciphertext: Buffer.from('wrapped:x'), uid: newUID(), keyID: 'other', annotations: {} }),
      (err: unknown) => {
        assert.ok(err instanceof AtrestError);
        assert.equal(err.code, 'ERR_KMS_CALL_FAILED');
        assert.equal(err.message, 'KMS call /v2.KeyManagementService/Decrypt failed: NOT_FOUND: unknown key id');
        return true;
      },
    );
  } finally {
    await kms.close();
  }
});

test('newUID gives random lowercase version-4 UUIDs', () => {
  const a = newUID();
  assert.match(a, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.notEqual(a, newUID());
});

test('an abstract socket endpoint is refused with a clear message', () => {
  assert.throws(
    () => createKmsV2Client({ endpoint: 'unix:///@some-plugin', timeoutMs: 1000 }),
    (e: unknown) =>
      e instanceof AtrestError && e.code === 'ERR_SOCKET_ENDPOINT' && /abstract socket @some-plugin/.test(e.message),
  );
});
