// KmsService without gRPC: the cached self-test behind Status healthz, annotation rules, and what a
// misbehaving backend (an injected fault no real keyring produces) does to the answers.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { AtrestError, BackendError } from '../../src/errors.js';
import type { KeyBackend, Wrapped } from '../../src/backends/backend.js';
import { silentLogger } from '../../src/logger.js';
import {
  createKmsService,
  isFullyQualifiedDomainName,
  validateAnnotations,
  type BackendOperation,
  type BackendOutcome,
} from '../../src/kms/service.js';
import { createKeyringBackend } from '../../src/backends/keyring.js';
import { newKeyringFile, tempDir } from './helpers.js';

/** Wraps a real keyring backend; `fault` lets a test make it fail or answer out of contract. */
function faulty(inner: KeyBackend) {
  const control = {
    fail: undefined as BackendError | undefined,
    rewrite: undefined as ((w: Wrapped) => Wrapped) | undefined,
  };
  const backend: KeyBackend = {
    name: 'faulty',
    currentKeyID: () => inner.currentKeyID(),
    async wrap(r) {
      if (control.fail) throw control.fail;
      const w = await inner.wrap(r);
      return control.rewrite ? control.rewrite(w) : w;
    },
    async unwrap(r) {
      if (control.fail) throw control.fail;
      return inner.unwrap(r);
    },
    reload: () => inner.reload(),
    close: () => inner.close(),
  };
  return { backend, control };
}

async function setup(t: { after(fn: () => unknown): void }) {
  const inner = await createKeyringBackend({ path: await newKeyringFile(await tempDir(t)) });
  t.after(() => inner.close());
  const { backend, control } = faulty(inner);
  let clock = 1_000_000;
  const ops: [BackendOperation, BackendOutcome][] = [];
  const selfTests: boolean[] = [];
  const service = createKmsService({
    backend,
    version: '1.2.3',
    logger: silentLogger,
    now: () => clock,
    selfTestIntervalMs: 30_000,
    observer: {
      backendOperation: (op, outcome) => ops.push([op, outcome]),
      selfTest: (ok) => selfTests.push(ok),
      activeKeyID: () => {},
    },
  });
  t.after(() => service.stop());
  return { service, control, ops, selfTests, advance: (ms: number) => (clock += ms) };
}

test('Status is not ok before the first self-test and ok right after one passed', async (t) => {
  const { service, selfTests } = await setup(t);
  const before = await service.status();
  assert.equal(before.version, 'v2beta1');
  assert.notEqual(before.healthz, 'ok');
  assert.match(before.healthz, /not run/);
  await service.selfTest();
  const after = await service.status();
  assert.equal(after.healthz, 'ok');
  assert.ok(after.keyID.length > 0);
  assert.deepEqual(selfTests, [true]);
});

test('Status does not touch the backend: it answers from the cached self-test', async (t) => {
  const { service, ops } = await setup(t);
  await service.selfTest();
  const n = ops.length;
  for (let i = 0; i < 100; i++) await service.status();
  assert.equal(ops.length, n);
});

test('a failing backend makes healthz report the failure; a recovery makes it ok again', async (t) => {
  const { service, control, ops } = await setup(t);
  await service.selfTest();
  control.fail = new BackendError('faulty', 'unavailable', 'HSM unreachable');
  await service.selfTest();
  const s = await service.status();
  assert.match(s.healthz, /^self-test failed: faulty: HSM unreachable/);
  assert.deepEqual(ops.at(-1), ['wrap', 'unavailable']);
  control.fail = undefined;
  await service.selfTest();
  assert.equal((await service.status()).healthz, 'ok');
});

test('a passing self-test goes stale when no newer one passes', async (t) => {
  const { service, advance } = await setup(t);
  await service.selfTest();
  advance(60_000);
  assert.equal((await service.status()).healthz, 'ok');
  advance(40_001);
  assert.match((await service.status()).healthz, /older than/);
  assert.equal(service.selfTestState().healthy, false);
});

test('Encrypt never returns annotations kube-apiserver would reject', async (t) => {
  const { service, control } = await setup(t);
  control.rewrite = (w) => ({ ...w, annotations: { 'Not-A-Domain': Buffer.from('x') } });
  await assert.rejects(service.encrypt(randomBytes(32), 'u'), (err: unknown) => {
    assert.ok(err instanceof BackendError && err.kind === 'other');
    assert.match(err.message, /Not-A-Domain/);
    return true;
  });
  control.rewrite = (w) => ({
    ...w,
    annotations: { 'version.atrest.example.io': Buffer.alloc(33_000) },
  });
  await assert.rejects(service.encrypt(randomBytes(32), 'u'), /32768/);
  control.rewrite = (w) => ({
    ...w,
    annotations: { 'version.atrest.example.io': Buffer.from('1') },
  });
  const ok = await service.encrypt(randomBytes(32), 'u');
  assert.deepEqual(ok.annotations, { 'version.atrest.example.io': Buffer.from('1') });
  control.rewrite = (w) => ({ ...w, keyID: 'k'.repeat(1025) });
  await assert.rejects(service.encrypt(randomBytes(32), 'u'), /key id is 1025 bytes/);
});

test('the v1 Version answer names atrest and the package version', async (t) => {
  const { service } = await setup(t);
  assert.deepEqual(service.version('v1beta1'), {
    version: 'v1beta1',
    runtimeName: 'atrest',
    runtimeVersion: '1.2.3',
  });
  assert.throws(
    () => service.version(''),
    (e: unknown) => e instanceof AtrestError && e.code === 'ERR_REQUEST_INVALID',
  );
});

test('annotation keys follow kube-apiserver IsFullyQualifiedDomainName', () => {
  for (const ok of ['a.b', 'version.encryption.remote.io', 'x1.example.com.', 'a-b.c-d']) {
    assert.ok(isFullyQualifiedDomainName(ok), ok);
  }
  for (const bad of [
    'localhost',
    'A.b',
    'kms.example.io/audit',
    '-a.b',
    'a..b',
    '',
    `${'a'.repeat(64)}.b`,
  ]) {
    assert.ok(!isFullyQualifiedDomainName(bad), bad);
  }
  assert.deepEqual(validateAnnotations({ 'a.b': Buffer.alloc(32_765) }), []);
  assert.equal(validateAnnotations({ 'a.b': Buffer.alloc(32_766) }).length, 1);
});

test("a remote backend's own health report makes healthz fail even after a passing self-test", async (t) => {
  const inner = await createKeyringBackend({ path: await newKeyringFile(await tempDir(t)) });
  t.after(() => inner.close());
  let ok = true;
  const backend: KeyBackend = {
    ...inner,
    name: 'remote',
    health: () =>
      ok
        ? { ok, message: 'ok' }
        : { ok, kind: 'throttled', message: 'rate limited by the key manager' },
  };
  const service = createKmsService({ backend, version: 't', logger: silentLogger });
  await service.selfTest();
  assert.equal((await service.status()).healthz, 'ok');
  ok = false;
  assert.equal((await service.status()).healthz, 'remote: rate limited by the key manager');
  assert.equal(service.selfTestState().healthy, false);
});

test("each call's signal reaches the backend only when read, on every method; a backend throwing synchronously is counted", async (t) => {
  const inner = await createKeyringBackend({ path: await newKeyringFile(await tempDir(t)) });
  t.after(() => inner.close());
  const seen: [string, AbortSignal | undefined][] = [];
  let readSignal = true;
  let throwNow = false;
  const backend: KeyBackend = {
    ...inner,
    name: 'probe',
    currentKeyID: () => inner.currentKeyID(),
    wrap(r) {
      if (throwNow) throw new BackendError('probe', 'unavailable', 'thrown, not rejected');
      if (readSignal) seen.push(['wrap', r.signal]);
      return inner.wrap(r);
    },
    unwrap(r) {
      if (readSignal) seen.push(['unwrap', r.signal]);
      return inner.unwrap(r);
    },
  };
  const ops: [BackendOperation, BackendOutcome][] = [];
  const service = createKmsService({
    backend,
    version: '1.2.3',
    logger: silentLogger,
    observer: { backendOperation: (op, outcome) => ops.push([op, outcome]), selfTest: () => {}, activeKeyID: () => {} },
  });
  const controller = new AbortController();
  let reads = 0;
  const call = {
    get signal() {
      reads++;
      return controller.signal;
    },
  };
  const enc = await service.encrypt(randomBytes(32), 'u1', call);
  await service.decrypt({ ciphertext: enc.ciphertext, keyID: enc.keyID, annotations: enc.annotations, uid: 'u1' }, call);
  const v1c = await service.encryptV1('v1beta1', randomBytes(32), call);
  await service.decryptV1('v1beta1', v1c, call);
  assert.deepEqual(seen.map(([op]) => op), ['wrap', 'unwrap', 'wrap', 'unwrap']);
  for (const [, s] of seen) assert.equal(s, controller.signal);
  assert.equal(reads, 4);
  readSignal = false;
  await service.decrypt({ ciphertext: enc.ciphertext, keyID: enc.keyID, annotations: enc.annotations, uid: 'u1' }, call);
  assert.equal(reads, 4, 'a backend that does not read the signal must not make one');
  throwNow = true;
  await assert.rejects(service.encrypt(randomBytes(32), 'u2', call), /thrown, not rejected/);
  assert.deepEqual(ops.at(-1), ['wrap', 'unavailable']);
  assert.deepEqual(
    ops.slice(0, 5).map(([, o]) => o),
    ['ok', 'ok', 'ok', 'ok', 'ok'],
  );
});
