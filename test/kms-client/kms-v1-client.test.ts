import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { AtrestError } from '../../src/errors.js';
import { GRPC_CODE, GrpcStatusError } from '../../src/grpc/status.js';
import { createKmsV1Client } from '../../src/kms-client/index.js';
import {
  DecryptRequest,
  DecryptResponse,
  EncryptRequest,
  EncryptResponse,
  V1BETA1_METHODS,
  VersionRequest,
  VersionResponse,
} from '../../src/proto/kms-v1beta1.js';
import { startFixture } from '../grpc/fixture.js';

// A tiny in-test v1beta1 plugin: XOR "encryption", a switchable Version answer, a call log.
const log: string[] = [];
let answerVersion = 'v1beta1';
let failVersion = false;
const xor = (b: Uint8Array): Buffer => Buffer.from(b.map((x) => x ^ 0x5a));

const fx = await startFixture({
  maxMessageBytes: 64 * 1024,
  handlers: new Map([
    [
      V1BETA1_METHODS.version,
      async (call) => {
        const req = VersionRequest.decode(call.message);
        log.push(`Version(${req.version})`);
        await new Promise((r) => setTimeout(r, 20));
        if (failVersion) throw new GrpcStatusError(GRPC_CODE.UNAVAILABLE, 'warming up');
        return VersionResponse.encode({ version: answerVersion, runtime_name: 'test-kms', runtime_version: '1.2.3' });
      },
    ],
    [
      V1BETA1_METHODS.encrypt,
      async (call) => {
        const req = EncryptRequest.decode(call.message);
        log.push(`Encrypt(${req.version})`);
        return EncryptResponse.encode({ cipher: xor(req.plain) });
      },
    ],
    [
      V1BETA1_METHODS.decrypt,
      async (call) => {
        const req = DecryptRequest.decode(call.message);
        log.push(`Decrypt(${req.version})`);
        if (req.cipher.length === 0) throw new GrpcStatusError(GRPC_CODE.INVALID_ARGUMENT, 'empty cipher');
        return DecryptResponse.encode({ plain: xor(req.cipher) });
      },
    ],
  ]),
});
after(() => fx.cleanup());
const endpoint = (): string => `unix://${fx.address}`;

test('runs one Version check before the first Encrypt, shared by concurrent first calls', async () => {
  log.length = 0;
  const kms = createKmsV1Client({ endpoint: endpoint(), timeoutMs: 3000 });
  try {
    const dek = Buffer.from('0123456789abcdef0123456789abcdef');
    const [c1, c2] = await Promise.all([kms.encrypt(dek), kms.encrypt(dek)]);
    assert.deepEqual(c1, xor(dek));
    assert.deepEqual(await kms.decrypt(c2), dek);
    assert.deepEqual(log, ['Version(v1beta1)', 'Encrypt(v1beta1)', 'Encrypt(v1beta1)', 'Decrypt(v1beta1)']);
  } finally {
    await kms.close();
  }
});

test('refuses a provider that answers another API version, and checks again on the next call', async () => {
  log.length = 0;
  answerVersion = 'v2';
  const kms = createKmsV1Client({ endpoint: endpoint(), timeoutMs: 3000 });
  try {
    await assert.rejects(kms.encrypt(Buffer.from('ping')), (err: unknown) => {
      assert.ok(err instanceof AtrestError);
      assert.equal(err.code, 'ERR_KMS_VERSION');
      assert.equal(err.message, 'KMS provider api version v2 is not supported, only v1beta1 is supported now');
      return true;
    });
    answerVersion = 'v1beta1';
    failVersion = true;
    await assert.rejects(kms.decrypt(Buffer.from('x')), (err: unknown) => {
      assert.ok(err instanceof AtrestError);
      assert.equal(err.code, 'ERR_KMS_CALL_FAILED');
      assert.match(err.message, /^failed get version from remote KMS provider: .*Version.*UNAVAILABLE: warming up/);
      return true;
    });
    failVersion = false;
    assert.deepEqual(await kms.decrypt(xor(Buffer.from('ping'))), Buffer.from('ping'));
    assert.deepEqual(log, ['Version(v1beta1)', 'Version(v1beta1)', 'Version(v1beta1)', 'Decrypt(v1beta1)']);
  } finally {
    answerVersion = 'v1beta1';
    failVersion = false;
    await kms.close();
  }
});

test('reports the provider version and runtime', async () => {
  const kms = createKmsV1Client({ endpoint: endpoint(), timeoutMs: 3000, authority: '/var/run/kms.sock' });
  try {
    assert.deepEqual(await kms.version(), { version: 'v1beta1', runtimeName: 'test-kms', runtimeVersion: '1.2.3' });
  } finally {
    await kms.close();
  }
});

test('turns a gRPC error into ERR_KMS_CALL_FAILED naming the method and the code', async () => {
  const kms = createKmsV1Client({ endpoint: endpoint(), timeoutMs: 3000 });
  try {
    await assert.rejects(kms.decrypt(new Uint8Array(0)), (err: unknown) => {
      assert.ok(err instanceof AtrestError);
      assert.equal(err.code, 'ERR_KMS_CALL_FAILED');
      assert.equal(err.message, 'KMS call /v1beta1.KeyManagementService/Decrypt failed: INVALID_ARGUMENT: empty cipher');
      assert.ok(err.cause instanceof GrpcStatusError);
      return true;
    });
  } finally {
    await kms.close();
  }
});

test('fails with DEADLINE_EXCEEDED inside ERR_KMS_CALL_FAILED when no plugin listens', async () => {
  const kms = createKmsV1Client({ endpoint: `unix://${fx.dir}/absent.sock`, timeoutMs: 150 });
  try {
    await assert.rejects(kms.encrypt(Buffer.from('x')), (err: unknown) => {
      assert.ok(err instanceof AtrestError);
      assert.equal(err.code, 'ERR_KMS_CALL_FAILED');
      assert.match(err.message, /DEADLINE_EXCEEDED/);
      return true;
    });
  } finally {
    await kms.close();
  }
});

test('refuses an endpoint that is not unix://', () => {
  assert.throws(
    () => createKmsV1Client({ endpoint: 'tcp://127.0.0.1:1234', timeoutMs: 1000 }),
    (err: unknown) => err instanceof AtrestError && err.code === 'ERR_SOCKET_ENDPOINT',
  );
});
