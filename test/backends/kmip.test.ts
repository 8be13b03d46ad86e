// The kmip backend against PyKMIP's real KMIP server (scripts/setup/71-pykmip.sh) over TLS with
// client certificates: the shared backend suite with and without the local KEK tier, rotation by a
// new key of the same Name (made with our own Create + Activate, and with PyKMIP's client), Locate
// agreeing with PyKMIP's client, and the error kinds of a revoked key, a foreign client certificate
// and an untrusted server.

import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { AtrestError, BackendError } from '../../src/errors.js';
import { createKmipService, type KmipConfig } from '../../src/backends/kmip/kmip.js';
import {
  createRemoteBackend,
  type RemoteBackendOptions,
  type RemoteKeyBackend,
} from '../../src/backends/remote.js';
import { runBackendSuite, waitFor } from './suite.js';
import { replaceEnvelopeKeyID } from './envelope-edit.js';
import { createPyKmip } from './pykmip.js';

const KEY = 'atrest-suite';
const kmip = await createPyKmip();
after(() => kmip.close());

// PyKMIP dates keys to the second and lists the newest first: a rotation's new key must be created
// in a later second than the key it replaces, or the two tie.
let lastCreatedSecond = 0;
// Keys are made with our own Create + Activate (fast); the first, and the Locate cross-check below,
// with PyKMIP's client.
async function createKey(name: string, by: 'ours' | 'pykmip' = 'ours'): Promise<string> {
  await waitFor(
    'a new second on the clock',
    () => Math.floor(Date.now() / 1000) > lastCreatedSecond,
  );
  const uid = by === 'pykmip' ? await kmip.createKey(name) : await kmip.createKeyNative(name);
  lastCreatedSecond = Math.floor(Date.now() / 1000);
  return uid;
}
await createKey(KEY, 'pykmip');

async function open(
  options: RemoteBackendOptions = {},
  config: Partial<KmipConfig> = {},
): Promise<RemoteKeyBackend> {
  return createRemoteBackend(createKmipService({ ...(await kmip.config(KEY)), ...config }), {
    refreshIntervalMs: 200,
    refreshRetryMs: 200,
    ...options,
  });
}

const sut = (options: RemoteBackendOptions) => ({
  open: () => open(options),
  rotate: async () => {
    await createKey(KEY);
  },
  rotationNoticedBy: 'background' as const,
  withUnknownKeyID: (c: Buffer) => replaceEnvelopeKeyID(c, 'kmip:999999'),
  // Keys live in PyKMIP's SQLite file: a restart keeps them.
  server: { stop: () => kmip.stop(), start: () => kmip.start() },
});

runBackendSuite('kmip (local KEK tier)', sut({}));
runBackendSuite('kmip (direct)', sut({ localKEK: false }));

describe('kmip backend', () => {
  it('uses the Unique Identifier of the newest active key of the name, as PyKMIP’s client locates it', async (t) => {
    const name = 'atrest-locate';
    const first = await createKey(name, 'pykmip');
    const b = await open({ background: false }, { keyName: name });
    t.after(() => b.close());
    assert.equal(await b.currentKeyID(), `kmip:${first}`);
    const second = await createKey(name, 'pykmip');
    assert.equal(await b.refresh(), `kmip:${second}`);
    assert.deepEqual(await kmip.locate(name), [second, first]);
  });

  it('makes one remote call per local KEK, not one per DEK', async (t) => {
    const b = await open({ background: false });
    t.after(() => b.close());
    const wrapped = [];
    for (let i = 0; i < 200; i++) wrapped.push(await b.wrap({ plaintext: randomBytes(32) }));
    for (const w of wrapped) await b.unwrap({ ciphertext: w.ciphertext });
    assert.deepEqual(b.remoteCalls(), { resolve: 1, encrypt: 1, decrypt: 0 });
  });

  it('reports a revoked key as user-induced, for new wraps and for old data', async (t) => {
    const name = 'atrest-revoke';
    const uid = await createKey(name);
    const b = await open({ background: false, localKEK: false }, { keyName: name });
    t.after(() => b.close());
    const w = await b.wrap({ plaintext: randomBytes(32) });
    await kmip.revoke(uid);
    await assert.rejects(b.unwrap({ ciphertext: w.ciphertext }), (err: unknown) => {
      assert.ok(err instanceof BackendError, String(err));
      assert.equal(err.kind, 'user-induced');
      assert.match(err.message, /permission denied/);
      return true;
    });
    await assert.rejects(b.refresh(), (err: unknown) => {
      assert.ok(err instanceof BackendError, String(err));
      assert.equal(err.kind, 'user-induced');
      assert.match(err.message, /no active AES key named "atrest-revoke"/);
      return true;
    });
    assert.equal(b.health().kind, 'user-induced');
  });

  it('does not see a key owned by another client certificate (user-induced)', async (t) => {
    const b = createRemoteBackend(createKmipService(await kmip.config(KEY, 'other')), {
      background: false,
    });
    t.after(() => b.close());
    await assert.rejects(b.refresh(), (err: unknown) => {
      assert.ok(err instanceof BackendError, String(err));
      assert.equal(err.kind, 'user-induced');
      return true;
    });
  });

  it('refuses a server its CA does not vouch for, as user-induced, without retrying', async (t) => {
    const wrongCA = await readFile(join(kmip.dir, 'client.pem'), 'utf8');
    const b = await open({ background: false }, { ca: wrongCA });
    t.after(() => b.close());
    await assert.rejects(b.refresh(), (err: unknown) => {
      assert.ok(err instanceof BackendError, String(err));
      assert.equal(err.kind, 'user-induced');
      assert.match(err.message, /TLS handshake failed/);
      return true;
    });
    assert.equal(b.remoteCalls().resolve, 1);
  });

  it('refuses data sealed for one key id under another, as a decryption failure', async (t) => {
    const b = await open({ background: false, localKEK: false });
    t.after(() => b.close());
    const w = await b.wrap({ plaintext: randomBytes(32) });
    const other = await createKey('atrest-other');
    await assert.rejects(
      b.unwrap({ ciphertext: replaceEnvelopeKeyID(w.ciphertext, `kmip:${other}`) }),
      (err: unknown) => err instanceof AtrestError && err.code === 'ERR_DECRYPTION_FAILED',
    );
  });
});
