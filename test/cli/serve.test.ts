// `atrest serve` as a real process on a real UNIX socket: socket mode, SIGTERM clean-up, stale/live/
// non-socket paths, abstract sockets, keyring permissions, SIGHUP rotation, health and metrics, --dev.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmod, readFile, stat, unlink, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import * as v1 from '../../src/proto/kms-v1beta1.js';
import * as v2 from '../../src/proto/kms-v2.js';
import { createGrpcClient, type GrpcClient } from '../../src/grpc/client.js';
import { readKeyringFile } from '../../src/backends/keyring-file.js';
import { keyIDHash } from '../../src/health/plugin-metrics.js';
import {
  RawH2Client,
  grpcFrame,
  grpcRequestBlock,
  hpackLiteral,
  messageOf,
  statusOf,
} from '../grpc/raw-h2.js';
import {
  httpGet,
  newKeyringFile,
  runCli,
  spawnCli,
  tempDir,
  type Cleanup,
} from '../kms/helpers.js';

const T = { timeoutMs: 5000 };

async function serve(t: Cleanup, extra: readonly string[] = []) {
  const dir = await tempDir(t, 'atrest-serve-');
  const keyring = await newKeyringFile(dir);
  const socket = join(dir, 'run', 'kms.sock');
  const proc = spawnCli(t, [
    'serve',
    '--listen',
    `unix://${socket}`,
    '--keyring',
    keyring,
    '--health-listen',
    '127.0.0.1:0',
    ...extra,
  ]);
  const serving = await proc.waitForLog('serving');
  const client = createGrpcClient({ address: socket });
  t.after(() => client.close());
  return {
    dir,
    keyring,
    socket,
    proc,
    serving,
    client,
    health: `http://${String(serving['health'])}`,
  };
}

async function status(c: GrpcClient) {
  return v2.StatusResponse.decode(await c.unary(v2.V2_METHODS.status, Buffer.alloc(0), T));
}

test('serve listens on a 0600 socket in a 0700 directory and answers both KMS APIs', async (t) => {
  const s = await serve(t);
  const st = await stat(s.socket);
  assert.ok(st.isSocket());
  assert.equal(st.mode & 0o777, 0o600);
  assert.equal((await stat(join(s.dir, 'run'))).mode & 0o777, 0o700);
  const version = v1.VersionResponse.decode(
    await s.client.unary(
      v1.V1BETA1_METHODS.version,
      v1.VersionRequest.encode({ version: 'v1beta1' }),
      T,
    ),
  );
  const pkg = JSON.parse(await readFile('package.json', 'utf8')) as { version: string };
  assert.equal(version.runtime_version, pkg.version);
  const st2 = await status(s.client);
  assert.equal(st2.healthz, 'ok');
  assert.equal(st2.key_id, (await readKeyringFile(s.keyring)).active);
  // The one version kube-apiserver 1.27/1.28 accept (exact match) and 1.29+ still accept.
  assert.equal(st2.version, 'v2beta1');
  assert.equal(s.serving['statusVersion'], 'v2beta1');
});

test('--status-version v2 makes Status answer "v2"; any other value is refused before listening', async (t) => {
  const s = await serve(t, ['--status-version', 'v2']);
  assert.equal((await status(s.client)).version, 'v2');
  assert.equal(s.serving['statusVersion'], 'v2');

  const dir = await tempDir(t);
  const keyring = await newKeyringFile(dir);
  const sock = join(dir, 'x.sock');
  const r = await runCli(t, [
    'serve',
    '--listen',
    `unix://${sock}`,
    '--keyring',
    keyring,
    '--health-listen',
    'off',
    '--status-version',
    'v1',
  ]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /--status-version/);
  assert.match(r.stderr, /v2beta1/);
  await assert.rejects(stat(sock), { code: 'ENOENT' });
});

test('SIGTERM finishes, removes the socket and exits 0', async (t) => {
  const s = await serve(t);
  await status(s.client);
  s.proc.child.kill('SIGTERM');
  assert.equal(await s.proc.exited(), 0);
  await assert.rejects(stat(s.socket), /ENOENT/);
  assert.ok(s.proc.stderr().includes('"msg":"stopped"'));
});

test('SIGINT also shuts down cleanly', async (t) => {
  const s = await serve(t);
  s.proc.child.kill('SIGINT');
  assert.equal(await s.proc.exited(), 0);
  await assert.rejects(stat(s.socket), /ENOENT/);
});

test('serve removes a stale socket left by a killed plugin', async (t) => {
  const first = await serve(t);
  first.proc.child.kill('SIGKILL');
  await first.proc.exited();
  assert.ok((await stat(first.socket)).isSocket(), 'SIGKILL leaves the socket behind');
  const again = spawnCli(t, [
    'serve',
    '--listen',
    `unix://${first.socket}`,
    '--keyring',
    first.keyring,
    '--health-listen',
    'off',
  ]);
  await again.waitForLog('serving');
  const c = createGrpcClient({ address: first.socket });
  t.after(() => c.close());
  assert.equal((await status(c)).healthz, 'ok');
  again.child.kill('SIGTERM');
  assert.equal(await again.exited(), 0);
});

test('serve refuses a socket another plugin is listening on', async (t) => {
  const s = await serve(t);
  const second = await runCli(t, [
    'serve',
    '--listen',
    `unix://${s.socket}`,
    '--keyring',
    s.keyring,
    '--health-listen',
    'off',
  ]);
  assert.notEqual(second.code, 0);
  assert.match(second.stderr, new RegExp(`another plugin is listening on ${s.socket}`));
  assert.equal((await status(s.client)).healthz, 'ok', 'the first plugin keeps serving');
});

test('serve refuses a path that is not a socket', async (t) => {
  const dir = await tempDir(t);
  const keyring = await newKeyringFile(dir);
  const path = join(dir, 'kms.sock');
  await writeFile(path, 'not a socket');
  const r = await runCli(t, [
    'serve',
    '--listen',
    `unix://${path}`,
    '--keyring',
    keyring,
    '--health-listen',
    'off',
  ]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /is not a socket; refusing to remove it/);
  assert.equal(await readFile(path, 'utf8'), 'not a socket');
});

test('serve refuses a keyring readable by group or others, and a missing one', async (t) => {
  const dir = await tempDir(t);
  const keyring = await newKeyringFile(dir);
  await chmod(keyring, 0o644);
  const r = await runCli(t, [
    'serve',
    '--listen',
    `unix://${join(dir, 'k.sock')}`,
    '--keyring',
    keyring,
    '--health-listen',
    'off',
  ]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /accessible by group or others \(mode 0644\).*chmod 600/);
  await assert.rejects(stat(join(dir, 'k.sock')), /ENOENT/, 'nothing was bound');
  const missing = join(dir, 'absent.json');
  const r2 = await runCli(t, [
    'serve',
    '--listen',
    `unix://${join(dir, 'k.sock')}`,
    '--keyring',
    missing,
    '--health-listen',
    'off',
  ]);
  assert.equal(r2.code, 1);
  assert.match(r2.stderr, /does not exist/);
  await assert.rejects(stat(missing), /ENOENT/, 'serve never creates a keyring');
});

test('serve refuses unix:///@name with a clear message and creates no file named @name', async (t) => {
  const dir = await tempDir(t);
  const keyring = await newKeyringFile(dir);
  const name = `atrest-cli-${randomBytes(6).toString('hex')}`;
  const r = await runCli(
    t,
    ['serve', '--listen', `unix:///@${name}`, '--keyring', keyring, '--health-listen', 'off'],
    dir,
  );
  assert.equal(r.code, 1);
  assert.match(r.stderr, /abstract socket @atrest-cli-\w+ is not supported/);
  await assert.rejects(stat(join(dir, `@${name}`)), /ENOENT/);
  await assert.rejects(stat(`/@${name}`), /ENOENT/);
});

test('keys rotate + SIGHUP: Status reports the new key id and old DEKs still decrypt', async (t) => {
  const s = await serve(t);
  const dek = randomBytes(32);
  const old = v2.EncryptResponse.decode(
    await s.client.unary(
      v2.V2_METHODS.encrypt,
      v2.EncryptRequest.encode({ plaintext: dek, uid: 'u1' }),
      T,
    ),
  );
  const oldV1 = v1.EncryptResponse.decode(
    await s.client.unary(
      v1.V1BETA1_METHODS.encrypt,
      v1.EncryptRequest.encode({ version: 'v1beta1', plain: dek }),
      T,
    ),
  );
  const rotate = await runCli(t, ['keys', 'rotate', '--keyring', s.keyring]);
  assert.equal(rotate.code, 0);
  const newID = (await readKeyringFile(s.keyring)).active;
  assert.notEqual(newID, old.key_id);
  s.proc.child.kill('SIGHUP');
  await s.proc.waitForLog('reloaded keys');
  const st = await status(s.client);
  assert.equal(st.key_id, newID);
  assert.equal(st.healthz, 'ok');
  const fresh = v2.EncryptResponse.decode(
    await s.client.unary(
      v2.V2_METHODS.encrypt,
      v2.EncryptRequest.encode({ plaintext: dek, uid: 'u2' }),
      T,
    ),
  );
  assert.equal(fresh.key_id, newID);
  const back = v2.DecryptResponse.decode(
    await s.client.unary(
      v2.V2_METHODS.decrypt,
      v2.DecryptRequest.encode({ ciphertext: old.ciphertext, uid: 'u3', key_id: old.key_id }),
      T,
    ),
  );
  assert.deepEqual(back.plaintext, dek);
  const backV1 = v1.DecryptResponse.decode(
    await s.client.unary(
      v1.V1BETA1_METHODS.decrypt,
      v1.DecryptRequest.encode({ version: 'v1beta1', cipher: oldV1.cipher }),
      T,
    ),
  );
  assert.deepEqual(backV1.plain, dek);
});

test('SIGHUP with an invalid keyring logs the error and keeps the old keys', async (t) => {
  const s = await serve(t);
  const before = await status(s.client);
  await writeFile(s.keyring, '{"format":"atrest-keyring/v1","keys":[]}');
  s.proc.child.kill('SIGHUP');
  const line = await s.proc.waitForLog('reload failed; the previously loaded keys stay in service');
  assert.equal(line['level'], 'error');
  assert.match(String(line['error']), /keys: must be a non-empty list/);
  const after = await status(s.client);
  assert.equal(after.key_id, before.key_id);
  assert.equal(after.healthz, 'ok');
});

test('/livez, /healthz, /readyz and /metrics answer on the health listener', async (t) => {
  const s = await serve(t);
  const dek = randomBytes(32);
  await s.client.unary(
    v1.V1BETA1_METHODS.encrypt,
    v1.EncryptRequest.encode({ version: 'v1beta1', plain: dek }),
    T,
  );
  await assert.rejects(
    s.client.unary(
      v1.V1BETA1_METHODS.decrypt,
      v1.DecryptRequest.encode({ version: 'v1beta1', cipher: Buffer.from('xx') }),
      T,
    ),
  );
  assert.deepEqual(await httpGet(`${s.health}/livez`).then((r) => [r.status, r.body]), [200, 'ok']);
  assert.deepEqual(await httpGet(`${s.health}/healthz`).then((r) => [r.status, r.body]), [
    200,
    'ok',
  ]);
  const ready = await httpGet(`${s.health}/readyz?verbose`);
  assert.equal(ready.status, 200);
  assert.match(
    ready.body,
    /\[\+\]socket ok\n\[\+\]keyring-loaded ok\n\[\+\]self-test ok\nreadyz check passed/,
  );
  const m = await httpGet(`${s.health}/metrics`);
  assert.equal(m.status, 200);
  assert.match(m.type, /^text\/plain; version=0\.0\.4/);
  const active = (await readKeyringFile(s.keyring)).active;
  assert.match(
    m.body,
    /atrest_grpc_requests_total\{service="v1beta1\.KeyManagementService",method="Encrypt",code="OK"\} 1/,
  );
  assert.match(
    m.body,
    /atrest_grpc_requests_total\{service="v1beta1\.KeyManagementService",method="Decrypt",code="INVALID_ARGUMENT"\} 1/,
  );
  assert.match(
    m.body,
    /atrest_grpc_request_duration_seconds_bucket\{service="v1beta1\.KeyManagementService",method="Encrypt",le="\+Inf"\} 1/,
  );
  assert.match(
    m.body,
    /atrest_backend_operations_total\{backend="keyring",operation="wrap",outcome="ok"\} \d+/,
  );
  assert.match(
    m.body,
    /atrest_backend_operations_total\{backend="keyring",operation="unwrap",outcome="user-induced"\} 1/,
  );
  assert.ok(m.body.includes(`atrest_active_key_id_info{key_id_hash="${keyIDHash(active)}"} 1`));
  assert.ok(!m.body.includes(active), 'the raw key id is never a label');
  assert.match(
    m.body,
    /atrest_build_info\{version="[^"]+",node_version="v20\.[^"]+",backend="keyring"\} 1/,
  );
  assert.match(m.body, /process_cpu_seconds_total \d/);
  assert.equal((await httpGet(`${s.health}/nope`)).status, 404);
});

test('/readyz fails but /livez stays ok when the socket file is deleted', async (t) => {
  const s = await serve(t, ['--socket-check-interval', '3600']);
  await unlink(s.socket);
  const ready = await httpGet(`${s.health}/readyz`);
  assert.equal(ready.status, 503);
  assert.match(ready.body, /\[-\]socket failed: socket .* was removed/);
  assert.equal((await httpGet(`${s.health}/livez`)).status, 200);
});

test('a deleted socket file is re-created by the watchdog and serves again', async (t) => {
  const s = await serve(t, ['--socket-check-interval', '0.2']);
  await unlink(s.socket);
  await s.proc.waitForLog('socket file was deleted or replaced; re-created it');
  const st = await stat(s.socket);
  assert.equal(st.mode & 0o777, 0o600);
  const fresh = createGrpcClient({ address: s.socket });
  t.after(() => fresh.close());
  assert.equal((await status(fresh)).healthz, 'ok');
  assert.equal((await httpGet(`${s.health}/readyz`)).status, 200);
});

test('--health-listen off starts no health listener; a taken port is refused clearly', async (t) => {
  const s = await serve(t);
  const port = Number(String(s.serving['health']).split(':')[1]);
  const dir = await tempDir(t);
  const keyring = await newKeyringFile(dir);
  const r = await runCli(t, [
    'serve',
    '--listen',
    `unix://${join(dir, 'x.sock')}`,
    '--keyring',
    keyring,
    '--health-listen',
    `127.0.0.1:${port}`,
  ]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /cannot listen for health checks on 127\.0\.0\.1:\d+: EADDRINUSE/);
  await assert.rejects(stat(join(dir, 'x.sock')), /ENOENT/, 'the KMS socket is removed again');
  const off = spawnCli(t, [
    'serve',
    '--listen',
    `unix://${join(dir, 'y.sock')}`,
    '--keyring',
    keyring,
    '--health-listen',
    'off',
  ]);
  const line = await off.waitForLog('serving');
  assert.equal(line['health'], 'off');
});

test('serve --dev creates a labelled development keyring on first run and prints the config to paste', async (t) => {
  const dir = await tempDir(t);
  const socket = join(dir, 'dev.sock');
  const first = spawnCli(
    t,
    ['serve', '--dev', '--listen', `unix://${socket}`, '--health-listen', 'off'],
    dir,
  );
  await first.waitForLog('serving');
  const out = await first.waitForStdout(/Stop with Ctrl-C/);
  assert.match(out, /DEVELOPMENT/);
  assert.match(out, /never encrypt real cluster data/);
  assert.ok(out.includes(`endpoint: unix://${socket}`));
  assert.match(
    out,
    /kind: EncryptionConfiguration[\s\S]*apiVersion: v2[\s\S]*apiVersion: v1[\s\S]*cachesize: 1000/,
  );
  const keyringPath = join(dir, '.atrest-dev', 'keyring.json');
  const keyring = await readKeyringFile(keyringPath);
  assert.equal(keyring.development, true);
  assert.equal((await stat(keyringPath)).mode & 0o777, 0o600);
  first.child.kill('SIGTERM');
  assert.equal(await first.exited(), 0);
  const second = spawnCli(
    t,
    ['serve', '--dev', '--listen', `unix://${socket}`, '--health-listen', 'off'],
    dir,
  );
  await second.waitForLog('serving');
  assert.match(await second.waitForStdout(/Stop with Ctrl-C/), /using the DEVELOPMENT keyring/);
  assert.equal(
    (await readKeyringFile(keyringPath)).active,
    keyring.active,
    'the second run reuses the key',
  );
  second.child.kill('SIGTERM');
  assert.equal(await second.exited(), 0);
});

test('serve without --listen or --keyring explains what is missing', async (t) => {
  const r = await runCli(t, ['serve', '--health-listen', 'off']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /--listen/);
  const dir = await tempDir(t);
  const r2 = await runCli(t, [
    'serve',
    '--listen',
    `unix://${join(dir, 'a.sock')}`,
    '--health-listen',
    'off',
  ]);
  assert.notEqual(r2.code, 0);
  assert.match(r2.stderr, /--keyring/);
});

test('a live listener elsewhere on the same path stays untouched after serve refuses it', async (t) => {
  const dir = await tempDir(t);
  const keyring = await newKeyringFile(dir);
  const path = join(dir, 'busy.sock');
  const other = createServer((c) => c.destroy());
  await new Promise<void>((r) => other.listen(path, r));
  t.after(() => new Promise<void>((r) => other.close(() => r())));
  const r = await runCli(t, [
    'serve',
    '--listen',
    `unix://${path}`,
    '--keyring',
    keyring,
    '--health-listen',
    'off',
  ]);
  assert.match(r.stderr, /another plugin is listening/);
  assert.ok((await stat(path)).isSocket());
});

test('serve answers v1 and v2 calls whose :authority is the raw socket path, as old API servers send', async (t) => {
  const s = await serve(t);
  const c = await RawH2Client.connect(s.socket);
  t.after(() => c.close());
  let stream = 1;
  const call = async (method: string, body: Buffer): Promise<Buffer> => {
    const r = await c.request(
      stream,
      grpcRequestBlock(method, hpackLiteral('without', 1, s.socket)),
      grpcFrame(body),
    );
    stream += 2;
    assert.equal(statusOf(r), 0, `${method}: ${JSON.stringify(r.headers)}`);
    return messageOf(r);
  };
  const dek = randomBytes(32);
  const version = v1.VersionResponse.decode(
    await call(v1.V1BETA1_METHODS.version, v1.VersionRequest.encode({ version: 'v1beta1' })),
  );
  assert.equal(version.version, 'v1beta1');
  const enc1 = v1.EncryptResponse.decode(
    await call(
      v1.V1BETA1_METHODS.encrypt,
      v1.EncryptRequest.encode({ version: 'v1beta1', plain: dek }),
    ),
  );
  const dec1 = v1.DecryptResponse.decode(
    await call(
      v1.V1BETA1_METHODS.decrypt,
      v1.DecryptRequest.encode({ version: 'v1beta1', cipher: enc1.cipher }),
    ),
  );
  assert.deepEqual(dec1.plain, dek);
  const st = v2.StatusResponse.decode(await call(v2.V2_METHODS.status, Buffer.alloc(0)));
  assert.equal(st.healthz, 'ok');
  const enc2 = v2.EncryptResponse.decode(
    await call(v2.V2_METHODS.encrypt, v2.EncryptRequest.encode({ plaintext: dek, uid: 'raw' })),
  );
  assert.equal(enc2.key_id, st.key_id);
  const dec2 = v2.DecryptResponse.decode(
    await call(
      v2.V2_METHODS.decrypt,
      v2.DecryptRequest.encode({ ciphertext: enc2.ciphertext, uid: 'raw', key_id: enc2.key_id }),
    ),
  );
  assert.deepEqual(dec2.plaintext, dek);
});
