// `atrest serve --backend aws-kms --backend-config FILE` end to end: the real CLI over its UNIX socket,
// in front of moto's AWS KMS server. v1beta1 and v2 round trips, a rotation in the key manager seen
// by Status without a restart, and an outage of the key manager reported by Status, then recovered
// from on its own.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  CreateAliasCommand,
  CreateKeyCommand,
  KMSClient,
  UpdateAliasCommand,
} from '@aws-sdk/client-kms';
import {
  createKmsV1Client,
  createKmsV2Client,
  type KmsV1Client,
  type KmsV2Client,
} from '../../src/kms-client/index.js';
import { waitFor } from './suite.js';
import { answersHttp, findTool, freePort, startServer, type RunningServer } from './servers.js';

const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const ALIAS = 'alias/atrest-serve';
// The SDK's default credential chain reads these, in this process (the admin client) and in the
// plugin; moto accepts any credentials.
process.env['AWS_ACCESS_KEY_ID'] = 'atrest-test';
process.env['AWS_SECRET_ACCESS_KEY'] = 'atrest-test-secret';
process.env['AWS_REGION'] = 'us-east-1';
delete process.env['AWS_PROFILE'];
const env = { ...process.env };

describe('atrest serve with the aws-kms backend', () => {
  let dir: string;
  let port: number;
  let moto: RunningServer | undefined;
  let admin: KMSClient;
  let plugin: ChildProcess;
  let kmsV1: KmsV1Client;
  let kmsV2: KmsV2Client;
  let stderr = '';

  async function startMoto(): Promise<void> {
    const endpoint = `http://127.0.0.1:${port}`;
    moto = await startServer(
      findTool('moto_server', '30-moto.sh'),
      ['-H', '127.0.0.1', '-p', String(port)],
      () => answersHttp(`${endpoint}/moto-api/`),
    );
    const arn = await newKey();
    await admin.send(new CreateAliasCommand({ AliasName: ALIAS, TargetKeyId: arn }));
  }

  async function newKey(): Promise<string> {
    return (await admin.send(new CreateKeyCommand({ Description: 'atrest serve test' })))
      .KeyMetadata!.Arn!;
  }

  const status = () => kmsV2.status();

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'atrest-serve-aws-'));
    port = await freePort();
    admin = new KMSClient({ endpoint: `http://127.0.0.1:${port}`, region: 'us-east-1' });
    await startMoto();
    const config = join(dir, 'backends.yaml');
    await writeFile(
      config,
      [
        'aws-kms:',
        `  keyId: ${ALIAS}`,
        `  endpoint: http://127.0.0.1:${port}`,
        '  region: us-east-1',
        '  refreshInterval: 300ms',
        '  timeout: 1s',
        '',
      ].join('\n'),
    );
    const socket = join(dir, 'kms.sock');
    plugin = spawn(
      process.execPath,
      [
        CLI,
        'serve',
        '--listen',
        `unix://${socket}`,
        '--backend',
        'aws-kms',
        '--backend-config',
        config,
        '--health-listen',
        'off',
        '--self-test-interval',
        '1',
      ],
      { env, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    plugin
      .stderr!.setEncoding('utf8')
      .on('data', (d: string) => (stderr = (stderr + d).slice(-8000)));
    kmsV1 = createKmsV1Client({ endpoint: `unix://${socket}`, timeoutMs: 10_000 });
    kmsV2 = createKmsV2Client({ endpoint: `unix://${socket}`, timeoutMs: 10_000 });
    await waitFor(
      `the plugin to report healthy (stderr: ${stderr})`,
      async () => (await status().catch(() => undefined))?.healthz === 'ok',
      30_000,
    );
  });

  after(async () => {
    await kmsV1?.close();
    await kmsV2?.close();
    if (plugin !== undefined && plugin.exitCode === null) {
      plugin.kill('SIGTERM');
      await new Promise((r) => plugin.once('exit', r));
    }
    admin?.destroy();
    await moto?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('reports the key ARN behind the alias as key_id and round-trips v2 with annotations', async () => {
    const s = await status();
    assert.equal(s.version, 'v2beta1');
    assert.match(s.keyID, /^aws-kms:arn:aws:kms:us-east-1:\d{12}:key\//);
    const seed = randomBytes(32);
    const enc = await kmsV2.encrypt(seed, 'u1');
    assert.equal(enc.keyID, s.keyID);
    assert.ok(enc.ciphertext.length <= 1024);
    assert.ok(
      'local-kek.atrest.io' in enc.annotations,
      'the wrapped local KEK travels as annotation',
    );
    const dec = await kmsV2.decrypt({
      ciphertext: enc.ciphertext,
      uid: 'u2',
      keyID: enc.keyID,
      annotations: enc.annotations,
    });
    assert.deepEqual(dec, seed);
  });

  it('round-trips v1beta1, whose ciphertext alone must be enough', async () => {
    const dek = randomBytes(32);
    assert.deepEqual(await kmsV1.decrypt(await kmsV1.encrypt(dek)), dek);
  });

  it('reports a new key_id in Status when the alias moves to a new key, without a restart', async () => {
    const before = (await status()).keyID;
    const arn = await newKey();
    await admin.send(new UpdateAliasCommand({ AliasName: ALIAS, TargetKeyId: arn }));
    await waitFor(
      'Status to show the new key',
      async () => (await status()).keyID === `aws-kms:${arn}`,
    );
    assert.notEqual((await status()).keyID, before);
  });

  it('reports an outage of the key manager in Status and recovers on its own', async () => {
    await moto!.stop();
    await waitFor('Status to report the outage', async () => (await status()).healthz !== 'ok');
    const down = await status();
    assert.match(down.healthz, /aws-kms|unavailable|reach/i);
    await startMoto();
    await waitFor('Status to recover', async () => (await status()).healthz === 'ok', 30_000);
    assert.equal(plugin.exitCode, null, 'the plugin kept running');
  });
});
