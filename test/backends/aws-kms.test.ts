// The AWS KMS backend against moto's server (a local server speaking the AWS KMS API, installed by
// scripts/setup/30-moto.sh), reached through the SDK's endpoint setting, with credentials from the
// SDK's default chain (environment variables here).

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import {
  CreateAliasCommand,
  CreateKeyCommand,
  DisableKeyCommand,
  EnableKeyCommand,
  KMSClient,
  UpdateAliasCommand,
} from '@aws-sdk/client-kms';
import { BackendError } from '../../src/errors.js';
import {
  createAwsKmsService,
  classifyAwsError,
  type AwsKmsConfig,
} from '../../src/backends/aws-kms.js';
import {
  createRemoteBackend,
  type RemoteBackendOptions,
  type RemoteKeyBackend,
} from '../../src/backends/remote.js';
import { runBackendSuite, waitFor } from './suite.js';
import { replaceEnvelopeKeyID } from './envelope-edit.js';
import { answersHttp, findTool, freePort, startServer, type RunningServer } from './servers.js';

// The SDK's default credential chain reads these; moto accepts any credentials.
process.env['AWS_ACCESS_KEY_ID'] = 'atrest-test';
process.env['AWS_SECRET_ACCESS_KEY'] = 'atrest-test-secret';
process.env['AWS_REGION'] = 'us-east-1';
delete process.env['AWS_PROFILE'];

const ALIAS = 'alias/atrest-suite';

interface Moto {
  readonly endpoint: string;
  readonly admin: KMSClient;
  start(): Promise<void>;
  stop(): Promise<void>;
  newKey(): Promise<string>;
}

async function createMoto(): Promise<Moto> {
  const tool = findTool('moto_server', '30-moto.sh');
  const port = await freePort();
  const endpoint = `http://127.0.0.1:${port}`;
  const admin = new KMSClient({ endpoint, region: 'us-east-1' });
  let server: RunningServer | undefined;
  const moto: Moto = {
    endpoint,
    admin,
    async start() {
      server = await startServer(tool, ['-H', '127.0.0.1', '-p', String(port)], () =>
        answersHttp(`${endpoint}/moto-api/`),
      );
      // moto keeps keys in memory: provision the alias on every start.
      const arn = await moto.newKey();
      await admin.send(new CreateAliasCommand({ AliasName: ALIAS, TargetKeyId: arn }));
    },
    async stop() {
      await server?.stop();
      server = undefined;
    },
    async newKey() {
      const out = await admin.send(new CreateKeyCommand({ Description: 'atrest test KEK' }));
      return out.KeyMetadata!.Arn!;
    },
  };
  await moto.start();
  return moto;
}

const moto = await createMoto();
after(async () => {
  moto.admin.destroy();
  await moto.stop();
});

function open(
  options: RemoteBackendOptions = {},
  config: Partial<AwsKmsConfig> = {},
): RemoteKeyBackend {
  const service = createAwsKmsService({ keyId: ALIAS, endpoint: moto.endpoint, ...config });
  return createRemoteBackend(service, { refreshIntervalMs: 200, refreshRetryMs: 200, ...options });
}

function unknownKeyID(c: Buffer): Buffer {
  return replaceEnvelopeKeyID(c, `aws-kms:arn:aws:kms:us-east-1:123456789012:key/${randomUUID()}`);
}

async function rotate(): Promise<void> {
  const arn = await moto.newKey();
  await moto.admin.send(new UpdateAliasCommand({ AliasName: ALIAS, TargetKeyId: arn }));
}

runBackendSuite('aws-kms (local KEK tier)', {
  open: async () => open(),
  rotate,
  rotationNoticedBy: 'background',
  withUnknownKeyID: unknownKeyID,
  server: { stop: () => moto.stop(), start: () => moto.start() },
});

runBackendSuite('aws-kms (direct)', {
  open: async () => open({ localKEK: false }),
  rotate,
  rotationNoticedBy: 'background',
  withUnknownKeyID: unknownKeyID,
  server: { stop: () => moto.stop(), start: () => moto.start() },
});

describe('aws-kms backend', () => {
  before(async () => {
    // Suites above may have restarted moto; make sure the alias resolves.
    await waitFor('moto', () => answersHttp(`${moto.endpoint}/moto-api/`));
  });

  it('uses the key ARN behind the alias as key id', async (t) => {
    const b = open();
    t.after(() => b.close());
    const id = await b.currentKeyID();
    assert.match(id, /^aws-kms:arn:aws:kms:us-east-1:\d{12}:key\/[0-9a-f-]{36}$/);
  });

  it('makes one remote call per local KEK, not one per DEK, and one unwrap per KEK after a restart', async () => {
    const b = open({ background: false });
    const wrapped = [];
    for (let i = 0; i < 200; i++) wrapped.push(await b.wrap({ plaintext: randomBytes(32) }));
    for (const w of wrapped) await b.unwrap({ ciphertext: w.ciphertext });
    assert.deepEqual(b.remoteCalls(), { resolve: 1, encrypt: 1, decrypt: 0 });
    await b.close();
    const restarted = open({ background: false });
    await Promise.all(wrapped.map((w) => restarted.unwrap({ ciphertext: w.ciphertext })));
    assert.equal(restarted.remoteCalls().decrypt, 1);
    await restarted.close();
  });

  it('makes one remote call per DEK without the local KEK tier', async (t) => {
    const b = open({ background: false, localKEK: false });
    t.after(() => b.close());
    for (let i = 0; i < 20; i++) {
      const w = await b.wrap({ plaintext: randomBytes(32) });
      await b.unwrap({ ciphertext: w.ciphertext });
    }
    assert.deepEqual(b.remoteCalls(), { resolve: 1, encrypt: 20, decrypt: 20 });
  });

  it('replaces the local KEK after the configured number of uses', async (t) => {
    const b = open({ background: false, localKEK: { maxUses: 5 } });
    t.after(() => b.close());
    for (let i = 0; i < 12; i++) await b.wrap({ plaintext: randomBytes(32) });
    assert.equal(b.remoteCalls().encrypt, 3);
  });

  it('binds the encryption context: data wrapped under one context does not open under another', async (t) => {
    const a = open({ localKEK: false }, { encryptionContext: { cluster: 'blue' } });
    const other = open({ localKEK: false }, { encryptionContext: { cluster: 'green' } });
    t.after(async () => {
      await a.close();
      await other.close();
    });
    const plaintext = randomBytes(32);
    const w = await a.wrap({ plaintext });
    assert.deepEqual(await a.unwrap({ ciphertext: w.ciphertext }), plaintext);
    await assert.rejects(other.unwrap({ ciphertext: w.ciphertext }), (err: unknown) => {
      assert.ok(err instanceof BackendError);
      assert.equal(err.kind, 'corruption');
      return true;
    });
  });

  it('reports a disabled key as user-induced in health, without retrying it, and drops cached local KEKs', async (t) => {
    const arn = await moto.newKey();
    const b = open({ background: false }, { keyId: arn });
    t.after(() => b.close());
    const plaintext = randomBytes(32);
    const w = await b.wrap({ plaintext });
    await b.unwrap({ ciphertext: w.ciphertext });
    assert.equal(b.remoteCalls().decrypt, 0, 'the local KEK is cached');
    const bareID = arn.slice(arn.lastIndexOf('/') + 1);
    await moto.admin.send(new DisableKeyCommand({ KeyId: bareID }));
    t.after(() => moto.admin.send(new EnableKeyCommand({ KeyId: bareID })));
    const before = b.remoteCalls().resolve;
    await assert.rejects(b.refresh(), (err: unknown) => {
      assert.ok(err instanceof BackendError);
      assert.equal(err.kind, 'user-induced');
      assert.match(err.message, /is Disabled; enable it/);
      return true;
    });
    assert.equal(b.remoteCalls().resolve - before, 1, 'a user-induced error is not retried');
    assert.equal(b.health().ok, false);
    assert.equal(b.health().kind, 'user-induced');
    // The cached local KEK is gone: the next unwrap asks the key manager again.
    await b.unwrap({ ciphertext: w.ciphertext }).catch(() => undefined);
    assert.equal(b.remoteCalls().decrypt, 1);
  });

  it('classifies SDK errors into the five kinds', () => {
    assert.equal(classifyAwsError({ name: 'AccessDeniedException' }), 'user-induced');
    assert.equal(classifyAwsError({ name: 'NotFoundException' }), 'user-induced');
    assert.equal(classifyAwsError({ name: 'ThrottlingException' }), 'throttled');
    assert.equal(classifyAwsError({ name: 'InvalidCiphertextException' }), 'corruption');
    assert.equal(classifyAwsError({ name: 'Error', code: 'ECONNREFUSED' }), 'unavailable');
    assert.equal(
      classifyAwsError({ name: 'X', $metadata: { httpStatusCode: 503 } }),
      'unavailable',
    );
    assert.equal(classifyAwsError({ name: 'X' }), 'other');
  });
});
