// The vault-transit backend against a real OpenBao server (scripts/setup/70-openbao.sh): the shared
// backend suite with and without the local KEK tier, rotation with the `bao` CLI, every auth method
// (token file re-read on reload and renewed, AppRole and TLS-certificate login with re-login), a
// namespace, min_decryption_version, a key type without associated data, error kinds (403, sealed
// 503, an untrusted server) driving health, and recovery.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { AtrestError, BackendError, ConfigInvalidError } from '../../src/errors.js';
import {
  createVaultTransitService,
  type VaultAuth,
  type VaultTransitConfig,
} from '../../src/backends/vault-transit.js';
import { classifyVaultStatus } from '../../src/backends/vault-http.js';
import { resolveSecret } from '../../src/backends/config.js';
import {
  createRemoteBackend,
  type RemoteBackendOptions,
  type RemoteKeyBackend,
} from '../../src/backends/remote.js';
import { runBackendSuite, waitFor } from './suite.js';
import { replaceEnvelopeKeyID } from './envelope-edit.js';
import { createOpenBao, provisionTransit, transitToken, type OpenBao } from './openbao.js';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { findTool } from './servers.js';
import { KMIP_TOOL } from './pykmip.js';

const KEY = 'atrest-suite';
const io = { env: process.env, readFile: (p: string) => readFile(p, 'utf8') };

const dev = await createOpenBao('dev');
after(() => dev.close());
await provisionTransit(dev, KEY);
const rootTokenFile = join(dev.dir, 'root-token');
await writeFile(rootTokenFile, dev.rootToken() + '\n', { mode: 0o600 });

function tokenAuth(file: string): VaultAuth {
  return { method: 'token', token: () => resolveSecret({ file }, io) };
}

function service(config: Partial<VaultTransitConfig> = {}, now?: () => number) {
  return createVaultTransitService(
    {
      address: dev.address,
      mount: 'transit',
      keyName: KEY,
      auth: tokenAuth(rootTokenFile),
      ...config,
    },
    now !== undefined ? { now } : {},
  );
}

function open(
  options: RemoteBackendOptions = {},
  config: Partial<VaultTransitConfig> = {},
): RemoteKeyBackend {
  return createRemoteBackend(service(config), {
    refreshIntervalMs: 200,
    refreshRetryMs: 200,
    ...options,
  });
}

const sut = (options: RemoteBackendOptions) => ({
  open: async () => open(options),
  rotate: async () => {
    await dev.cli('write', '-f', `transit/keys/${KEY}/rotate`);
  },
  rotationNoticedBy: 'background' as const,
  // A version of our key that Transit does not have.
  withUnknownKeyID: (c: Buffer) => replaceEnvelopeKeyID(c, `vault-transit:transit/${KEY}:v9999`),
  server: {
    stop: () => dev.stop(),
    // A dev server keeps keys in memory: provision them again, as the suite's contract says.
    start: async () => {
      await dev.start();
      await provisionTransit(dev, KEY);
    },
  },
});

runBackendSuite('vault-transit (local KEK tier)', sut({}));
runBackendSuite('vault-transit (direct)', sut({ localKEK: false }));

describe('vault-transit backend', () => {
  before(async () => {
    await waitFor('OpenBao', async () => (await fetch(`${dev.address}/v1/sys/health`)).ok);
  });

  it('uses the Transit key latest version as key id and follows a rotation done with the bao CLI', async (t) => {
    const name = 'atrest-rotate';
    await provisionTransit(dev, name);
    const b = open({}, { keyName: name });
    t.after(() => b.close());
    assert.equal(await b.currentKeyID(), `vault-transit:transit/${name}:v1`);
    const plaintext = randomBytes(32);
    const old = await b.wrap({ plaintext });
    await dev.cli('write', '-f', `transit/keys/${name}/rotate`);
    await waitFor('key id v2', async () => (await b.currentKeyID()).endsWith(':v2'));
    const fresh = await b.wrap({ plaintext });
    assert.equal(fresh.keyID, `vault-transit:transit/${name}:v2`);
    assert.deepEqual(await b.unwrap({ ciphertext: old.ciphertext }), plaintext);
  });

  it('reports min_decryption_version raised past old data as user-induced, with the fix', async (t) => {
    const name = 'atrest-mindec';
    await provisionTransit(dev, name);
    const b = open({ localKEK: false, background: false }, { keyName: name });
    t.after(() => b.close());
    const plaintext = randomBytes(32);
    const old = await b.wrap({ plaintext });
    await dev.cli('write', '-f', `transit/keys/${name}/rotate`);
    await dev.cli('write', `transit/keys/${name}/config`, 'min_decryption_version=2');
    await b.refresh();
    const calls = b.remoteCalls().decrypt;
    await assert.rejects(b.unwrap({ ciphertext: old.ciphertext }), (err: unknown) => {
      assert.ok(err instanceof BackendError, String(err));
      assert.equal(err.kind, 'user-induced');
      assert.match(err.message, /version 1 .* min_decryption_version \(2\) is above 1/);
      assert.match(err.message, /min_decryption_version=1/);
      return true;
    });
    assert.equal(b.remoteCalls().decrypt - calls, 1, 'not retried');
    assert.equal(b.health().kind, 'user-induced');
    await dev.cli('write', `transit/keys/${name}/config`, 'min_decryption_version=1');
    assert.deepEqual(await b.unwrap({ ciphertext: old.ciphertext }), plaintext);
  });

  it('binds the envelope header inside its own envelope for an RSA key (no associated data)', async (t) => {
    const name = 'atrest-rsa';
    await provisionTransit(dev, name, 'rsa-2048');
    const b = open({ localKEK: false, background: false }, { keyName: name });
    t.after(() => b.close());
    const plaintext = randomBytes(32);
    const w = await b.wrap({ plaintext });
    assert.deepEqual(await b.unwrap({ ciphertext: w.ciphertext }), plaintext);
    // The same Transit ciphertext under another key id's header fails our digest check.
    const other = open({ localKEK: false, background: false }, { keyName: name });
    t.after(() => other.close());
    await dev.cli('write', '-f', `transit/keys/${name}/rotate`);
    const moved = replaceEnvelopeKeyID(w.ciphertext, `vault-transit:transit/${name}:v2`);
    await assert.rejects(other.unwrap({ ciphertext: moved }), (err: unknown) => {
      assert.ok(err instanceof AtrestError, String(err));
      assert.equal(err.code, 'ERR_DECRYPTION_FAILED');
      return true;
    });
  });

  it('refuses a token without access as user-induced, then works after the token file changes and reload', async (t) => {
    const file = join(dev.dir, 'token-reload');
    await writeFile(file, 'not-a-token\n');
    const b = open({ background: false }, { auth: tokenAuth(file) });
    t.after(() => b.close());
    await assert.rejects(b.refresh(), (err: unknown) => {
      assert.ok(err instanceof BackendError, String(err));
      assert.equal(err.kind, 'user-induced');
      assert.ok(!err.message.includes('not-a-token'), 'the token never appears in messages');
      return true;
    });
    assert.equal(b.health().kind, 'user-induced');
    assert.equal(b.remoteCalls().resolve, 1, 'a 403 is not retried');
    await writeFile(file, (await transitToken(dev, KEY)) + '\n');
    await b.reload();
    assert.equal(b.health().ok, true);
    const plaintext = randomBytes(32);
    const w = await b.wrap({ plaintext });
    assert.deepEqual(await b.unwrap({ ciphertext: w.ciphertext }), plaintext);
  });

  it('reports a policy without the key as user-induced (HTTP 403)', async (t) => {
    const file = join(dev.dir, 'token-other');
    await writeFile(file, (await transitToken(dev, 'some-other-key')) + '\n');
    const b = open({ background: false }, { auth: tokenAuth(file) });
    t.after(() => b.close());
    await assert.rejects(b.refresh(), (err: unknown) => {
      assert.ok(err instanceof BackendError);
      assert.equal(err.kind, 'user-induced');
      assert.match(
        err.message,
        /HTTP 403.*policy must allow "read" on transit\/keys\/atrest-suite/,
      );
      return true;
    });
  });

  it('renews a renewable token once two thirds of its TTL have passed', async (t) => {
    const file = join(dev.dir, 'token-renew');
    await writeFile(file, (await transitToken(dev, KEY, { ttl: '1h' })) + '\n');
    let clock = Date.now();
    const svc = service({ auth: tokenAuth(file) }, () => clock);
    const b = createRemoteBackend(svc, { background: false, localKEK: false });
    t.after(() => b.close());
    await b.refresh();
    assert.deepEqual(svc.authCounts(), { logins: 1, renewals: 0 });
    clock += 41 * 60_000;
    await b.refresh();
    assert.deepEqual(svc.authCounts(), { logins: 1, renewals: 1 });
    await b.refresh();
    assert.deepEqual(svc.authCounts(), { logins: 1, renewals: 1 }, 'renewed once, not per call');
  });

  it('logs in with AppRole (ids from files) and logs in again before the token expires', async (t) => {
    await dev.api('POST', 'sys/auth/approle', { type: 'approle' }).catch(() => undefined);
    await transitToken(dev, KEY); // writes the atrest-<key> policy
    await dev.api('POST', 'auth/approle/role/atrest', {
      token_policies: [`atrest-${KEY}`],
      token_ttl: '20m',
      token_max_ttl: '30m',
    });
    const roleId = (
      (await dev.api('GET', 'auth/approle/role/atrest/role-id'))['data'] as Record<string, string>
    )['role_id']!;
    const secretId = (
      (await dev.api('POST', 'auth/approle/role/atrest/secret-id', {}))['data'] as Record<
        string,
        string
      >
    )['secret_id']!;
    const roleFile = join(dev.dir, 'role-id');
    const secretFile = join(dev.dir, 'secret-id');
    await writeFile(roleFile, roleId);
    await writeFile(secretFile, secretId + '\n');
    let clock = Date.now();
    const svc = service(
      {
        auth: {
          method: 'approle',
          mount: 'approle',
          roleId: () => resolveSecret({ file: roleFile }, io),
          secretId: () => resolveSecret({ file: secretFile }, io),
        },
      },
      () => clock,
    );
    const b = createRemoteBackend(svc, { background: false });
    t.after(() => b.close());
    const plaintext = randomBytes(32);
    const w = await b.wrap({ plaintext });
    assert.equal(svc.authCounts().logins, 1);
    clock += 14 * 60_000; // past 2/3 of 20 minutes
    await b.refresh();
    assert.equal(svc.authCounts().logins, 2);
    assert.deepEqual(await b.unwrap({ ciphertext: w.ciphertext }), plaintext);
  });

  it('reports a wrong AppRole secret id as user-induced and never prints it', async (t) => {
    const secretFile = join(dev.dir, 'secret-id-wrong');
    await writeFile(secretFile, 'wrong-secret-id-value');
    const roleFile = join(dev.dir, 'role-id-wrong');
    await writeFile(roleFile, 'wrong-role-id-value');
    const b = open(
      { background: false },
      {
        auth: {
          method: 'approle',
          mount: 'approle',
          roleId: () => resolveSecret({ file: roleFile }, io),
          secretId: () => resolveSecret({ file: secretFile }, io),
        },
      },
    );
    t.after(() => b.close());
    await assert.rejects(b.refresh(), (err: unknown) => {
      assert.ok(err instanceof BackendError, String(err));
      assert.equal(err.kind, 'user-induced');
      assert.doesNotMatch(err.message, /wrong-secret-id-value|wrong-role-id-value/);
      return true;
    });
  });

  it('reports an unreadable token file as a config problem naming the file', async (t) => {
    const b = open({ background: false }, { auth: tokenAuth(join(dev.dir, 'missing')) });
    t.after(() => b.close());
    await assert.rejects(b.refresh(), (err: unknown) => {
      assert.ok(err instanceof ConfigInvalidError, String(err));
      assert.match(err.message, /missing: cannot read: ENOENT/);
      return true;
    });
  });

  it('sends the namespace header', async (t) => {
    // OpenBao has namespaces: a Transit mount inside one is reached only with the header.
    await dev.api('POST', 'sys/namespaces/team-a', {});
    const res = await fetch(`${dev.address}/v1/sys/mounts/transit`, {
      method: 'POST',
      headers: { 'x-vault-token': dev.rootToken(), 'x-vault-namespace': 'team-a' },
      body: JSON.stringify({ type: 'transit' }),
    });
    assert.ok(res.ok, await res.text());
    const key = await fetch(`${dev.address}/v1/transit/keys/ns-key`, {
      method: 'POST',
      headers: { 'x-vault-token': dev.rootToken(), 'x-vault-namespace': 'team-a' },
      body: '{}',
    });
    assert.ok(key.ok, await key.text());
    const b = open({ background: false }, { keyName: 'ns-key', namespace: 'team-a' });
    t.after(() => b.close());
    const plaintext = randomBytes(32);
    const w = await b.wrap({ plaintext });
    assert.deepEqual(await b.unwrap({ ciphertext: w.ciphertext }), plaintext);
    const outside = open({ background: false }, { keyName: 'ns-key' });
    t.after(() => outside.close());
    await assert.rejects(outside.refresh(), (err: unknown) => {
      assert.ok(err instanceof BackendError);
      assert.equal(err.kind, 'user-induced');
      assert.match(err.message, /not found/);
      return true;
    });
  });

  it('reports a rate-limited server (HTTP 429) as throttled, retried inside the budget, and recovers', async (t) => {
    // A rate-limit quota on its own mount: one request per hour, then 429 Too Many Requests.
    await provisionTransit(dev, KEY, 'aes256-gcm96', 'transit-limited');
    const b = open({ background: false, localKEK: false }, { mount: 'transit-limited' });
    t.after(() => b.close());
    await dev.api('POST', 'sys/quotas/rate-limit/atrest-test', {
      rate: 1,
      interval: '1h',
      path: 'transit-limited/',
    });
    let removed = false;
    const remove = async () => {
      if (!removed) await dev.api('DELETE', 'sys/quotas/rate-limit/atrest-test');
      removed = true;
    };
    t.after(remove);
    await b.refresh();
    const before = b.remoteCalls().resolve;
    await assert.rejects(b.refresh(), (err: unknown) => {
      assert.ok(err instanceof BackendError, String(err));
      assert.equal(err.kind, 'throttled');
      assert.match(err.message, /HTTP 429/);
      return true;
    });
    assert.ok(b.remoteCalls().resolve - before > 1, 'a 429 is retried');
    assert.equal(b.health().kind, 'throttled');
    await remove();
    await b.refresh();
    assert.equal(b.health().ok, true);
  });

  it('sorts HTTP statuses into kinds: 403 user-induced, 429 throttled, 5xx unavailable', () => {
    assert.equal(classifyVaultStatus(403), 'user-induced');
    assert.equal(classifyVaultStatus(400), 'user-induced');
    assert.equal(classifyVaultStatus(429), 'throttled');
    assert.equal(classifyVaultStatus(503), 'unavailable');
    assert.equal(classifyVaultStatus(500), 'unavailable');
    assert.equal(classifyVaultStatus(302), 'other');
  });
});

describe('vault-transit against a sealed OpenBao', () => {
  let bao: OpenBao;
  before(async () => {
    bao = await createOpenBao('file');
    await provisionTransit(bao, KEY);
  });
  after(() => bao?.close());

  it('reports a sealed server as unavailable (retried inside the budget) and recovers once unsealed, without a restart', async (t) => {
    const file = join(bao.dir, 'token');
    await writeFile(file, (await transitToken(bao, KEY)) + '\n');
    const b = createRemoteBackend(
      createVaultTransitService({
        address: bao.address,
        mount: 'transit',
        keyName: KEY,
        auth: tokenAuth(file),
      }),
      { refreshIntervalMs: 200, refreshRetryMs: 200 },
    );
    t.after(() => b.close());
    const plaintext = randomBytes(32);
    const w = await b.wrap({ plaintext });
    await bao.seal();
    const before = b.remoteCalls().resolve;
    await assert.rejects(b.refresh(), (err: unknown) => {
      assert.ok(err instanceof BackendError, String(err));
      assert.equal(err.kind, 'unavailable');
      assert.match(err.message, /503.*sealed/i);
      return true;
    });
    assert.ok(b.remoteCalls().resolve - before > 1, 'a sealed server is retried');
    await waitFor('health to report the sealed server', () => b.health().ok === false);
    assert.equal(b.health().kind, 'unavailable');
    await bao.unseal();
    await waitFor('health to recover', () => b.health().ok);
    assert.deepEqual(await b.unwrap({ ciphertext: w.ciphertext }), plaintext);
  });
});

describe('vault-transit over TLS with certificate auth', () => {
  let bao: OpenBao;
  let certs: string;
  before(async () => {
    bao = await createOpenBao('dev-tls');
    await provisionTransit(bao, KEY);
    // A client CA and certificate (clientAuth), made by the same helper as the KMIP tests'.
    certs = join(bao.dir, 'client-certs');
    await promisify(execFile)(
      findTool('pykmip-python', '71-pykmip.sh'),
      [KMIP_TOOL, 'certs', certs],
      {
        env: { ...process.env, PYTHONWARNINGS: 'ignore' },
      },
    );
    await transitToken(bao, KEY); // writes the atrest-<key> policy
    await bao.api('POST', 'sys/auth/cert', { type: 'cert' });
    await bao.api('POST', 'auth/cert/certs/atrest', {
      certificate: await readFile(join(certs, 'ca.pem'), 'utf8'),
      token_policies: [`atrest-${KEY}`],
      token_ttl: '20m',
    });
  });
  after(() => bao?.close());

  it('logs in with the client certificate, verifies the server against its CA, and logs in again before expiry', async (t) => {
    let clock = Date.now();
    const svc = createVaultTransitService(
      {
        address: bao.address,
        mount: 'transit',
        keyName: KEY,
        ca: await readFile(bao.caFile, 'utf8'),
        cert: await readFile(join(certs, 'client.pem'), 'utf8'),
        key: await readFile(join(certs, 'client-key.pem'), 'utf8'),
        auth: { method: 'cert', mount: 'cert', role: 'atrest' },
      },
      { now: () => clock },
    );
    const b = createRemoteBackend(svc, { background: false });
    t.after(() => b.close());
    const plaintext = randomBytes(32);
    const w = await b.wrap({ plaintext });
    assert.deepEqual(await b.unwrap({ ciphertext: w.ciphertext }), plaintext);
    assert.equal(svc.authCounts().logins, 1);
    clock += 14 * 60_000;
    await b.refresh();
    assert.equal(svc.authCounts().logins, 2);
  });

  it('refuses a server its CA does not vouch for, as user-induced', async (t) => {
    const b = createRemoteBackend(
      createVaultTransitService({
        address: bao.address,
        mount: 'transit',
        keyName: KEY,
        ca: await readFile(join(certs, 'ca.pem'), 'utf8'),
        auth: { method: 'token', token: async () => bao.rootToken() },
      }),
      { background: false },
    );
    t.after(() => b.close());
    await assert.rejects(b.refresh(), (err: unknown) => {
      assert.ok(err instanceof BackendError, String(err));
      assert.equal(err.kind, 'user-induced');
      assert.match(err.message, /certificate/i);
      return true;
    });
  });
});
