// atrest's KMS clients against a grpc-go server: conformance/refplugin (k8s.io/kms v2 service and a
// v1beta1 service on one grpc-go server, built by scripts/setup/50-go-conformance.sh). Most operators'
// plugins are grpc-go servers; the other client tests talk to atrest's own servers.

import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { AtrestError } from '../../src/errors.js';
import { createKmsV1Client, createKmsV2Client, newUID } from '../../src/kms-client/index.js';
import { cacheBin } from '../helpers/etcd.js';
import { waitUntil } from '../helpers/wait-until.js';

const REFPLUGIN = join(cacheBin(), 'atrest-refplugin');
if (!existsSync(REFPLUGIN)) {
  throw new Error(`${REFPLUGIN} is missing: scripts/setup/50-go-conformance.sh builds it (npm test runs it first)`);
}

const dir = mkdtempSync(join(tmpdir(), 'atrest-grpc-go-'));
const socket = join(dir, 'ref.sock');
const keyring = join(dir, 'keyring.json');
let plugin: ChildProcess | undefined;

async function startPlugin(): Promise<void> {
  const child = spawn(REFPLUGIN, ['serve', '--listen', `unix://${socket}`, '--keyring', keyring], { stdio: 'ignore' });
  plugin = child;
  await waitUntil('the grpc-go plugin socket', () => existsSync(socket));
}

async function stopPlugin(): Promise<void> {
  const child = plugin;
  plugin = undefined;
  if (child === undefined || child.exitCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}

before(async () => {
  execFileSync(REFPLUGIN, ['keys', 'init', '--keyring', keyring]);
  await startPlugin();
});
after(async () => {
  await stopPlugin();
  rmSync(dir, { recursive: true, force: true });
});

const endpoint = (): string => `unix://${socket}`;

test('kms v1: Version, and Encrypt/Decrypt of a DEK and of 1 MiB (past HTTP/2 flow-control windows both ways)', async () => {
  const kms = createKmsV1Client({ endpoint: endpoint(), timeoutMs: 10_000 });
  try {
    assert.deepEqual(await kms.version(), { version: 'v1beta1', runtimeName: 'refplugin', runtimeVersion: '0.1.0' });
    for (const size of [32, 1024 * 1024]) {
      const plain = randomBytes(size);
      const cipher = await kms.encrypt(plain);
      assert.equal(cipher.length > size, true);
      assert.deepEqual(await kms.decrypt(cipher), plain);
    }
  } finally {
    await kms.close();
  }
});

test('kms v1: 256 calls in flight on one connection each get their own answer', async () => {
  const kms = createKmsV1Client({ endpoint: endpoint(), timeoutMs: 20_000 });
  try {
    const plains = Array.from({ length: 256 }, (_, i) => randomBytes(16 + (i % 64)));
    const back = await Promise.all(plains.map(async (p) => kms.decrypt(await kms.encrypt(p))));
    back.forEach((b, i) => assert.deepEqual(b, plains[i]));
  } finally {
    await kms.close();
  }
});

test("kms v1: a grpc-go error status reaches the caller with its code and the plugin's message", async () => {
  const kms = createKmsV1Client({ endpoint: endpoint(), timeoutMs: 10_000 });
  try {
    await assert.rejects(kms.decrypt(Buffer.from([200, 1, 2, 3])), (err: unknown) => {
      assert.ok(err instanceof AtrestError);
      assert.equal(err.code, 'ERR_KMS_CALL_FAILED');
      assert.match(err.message, /Decrypt failed: UNKNOWN: ciphertext too short/);
      return true;
    });
  } finally {
    await kms.close();
  }
});

test('kms v2: Status, then Encrypt/Decrypt with the uid and the key id the plugin reports', async () => {
  const kms = createKmsV2Client({ endpoint: endpoint(), timeoutMs: 10_000 });
  try {
    const status = await kms.status();
    assert.equal(status.healthz, 'ok');
    assert.match(status.keyID, /^ref-[0-9a-f]{16}$/);
    const seed = randomBytes(32);
    const enc = await kms.encrypt(seed, newUID());
    assert.equal(enc.keyID, status.keyID);
    assert.deepEqual(
      await kms.decrypt({ ciphertext: enc.ciphertext, keyID: enc.keyID, annotations: enc.annotations, uid: newUID() }),
      seed,
    );
  } finally {
    await kms.close();
  }
});

test('a grpc-go plugin restart: a call that raced it fails as UNAVAILABLE, a call made after waits for the plugin', async () => {
  const kms = createKmsV1Client({ endpoint: endpoint(), timeoutMs: 15_000 });
  try {
    const plain = randomBytes(32);
    const cipher = await kms.encrypt(plain);
    await stopPlugin();
    // Made at once: the client may not have seen the connection close yet, and then writes the call to
    // the dead connection. Such a call is not sent again (grpc-go does not either: the client cannot
    // tell whether the plugin got it); it fails as UNAVAILABLE, never as a cancel. If the client saw
    // the close first, the call waits for the plugin instead (wait-for-ready) and succeeds.
    const racing = kms.decrypt(cipher).then(
      (back) => ({ back }),
      (err: unknown) => ({ err }),
    );
    await new Promise((resolve) => setTimeout(resolve, 300));
    await startPlugin();
    const outcome = await racing;
    if ('err' in outcome) {
      assert.ok(outcome.err instanceof AtrestError, String(outcome.err));
      assert.match(outcome.err.message, /Decrypt failed: UNAVAILABLE: the connection closed before/);
    } else {
      assert.deepEqual(outcome.back, plain);
    }
    // Made after the restart began: waits for the plugin and succeeds.
    assert.deepEqual(await kms.decrypt(cipher), plain);
  } finally {
    await kms.close();
  }
});
