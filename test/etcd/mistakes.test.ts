// The natural operator mistakes of issue 17 on a real etcd and a running `atrest serve`: a wrong
// --etcd-prefix, `resources: [secret]` (singular), an unreachable plugin, and retiring a key that
// values in etcd still need. Each must end in a non-zero exit and a message naming the fix.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createH2Server, type Http2Server } from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createKmsV2Client } from '../../src/kms-client/index.js';
import { createKmsV2Transformer } from '../../src/transformers/kms-v2.js';
import { createPrefixTransformers } from '../../src/transformers/prefix.js';
import { EtcdClient } from '../../src/etcd/client.js';
import { startEtcd, type RunningEtcd } from '../helpers/etcd.js';
import { CLI, enc, encodeSecret, runCli, writeFile } from './fixtures.js';

const SECRETS = 20;

async function waitFor(path: string, proc: ChildProcess): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!existsSync(path)) {
    if (proc.exitCode !== null) throw new Error(`atrest serve exited with ${proc.exitCode}`);
    if (Date.now() > deadline) throw new Error(`${path} did not appear`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const kmsConfig = (endpoint: string, resources = '[secrets]', timeout = '5s'): string => `apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: ${resources}
    providers:
      - kms: {apiVersion: v2, name: kms2, endpoint: "${endpoint}", timeout: ${timeout}}
      - identity: {}
`;

describe('operator mistakes end in a non-zero exit that names the fix', () => {
  let etcd: RunningEtcd;
  let client: EtcdClient;
  let dir: string;
  let plugin: ChildProcess;
  let keyring: string;
  let endpoint: string;
  let config: string;

  before(async () => {
    etcd = await startEtcd();
    client = new EtcdClient({ endpoints: [etcd.endpoint] });
    dir = mkdtempSync(join(tmpdir(), 'atrest-mistakes-'));
    keyring = join(dir, 'keyring.json');
    execFileSync(process.execPath, [CLI, 'keys', 'init', '--keyring', keyring], { stdio: 'ignore' });
    const socket = join(dir, 'kms.sock');
    endpoint = `unix://${socket}`;
    plugin = spawn(process.execPath, [CLI, 'serve', '--listen', endpoint, '--keyring', keyring, '--health-listen', 'off', '--log-level', 'warn'], { stdio: 'ignore' });
    await waitFor(socket, plugin);
    config = writeFile(dir, 'enc.yaml', kmsConfig(endpoint));
    // what a kube-apiserver with kms v2 first wrote: SECRETS Secrets in two namespaces
    const v2 = createKmsV2Client({ endpoint, timeoutMs: 5000 });
    const t = createKmsV2Transformer({ name: 'kms2', service: v2 });
    assert.equal((await t.refreshStatus()).ok, true);
    const writer = createPrefixTransformers([t]);
    for (let i = 0; i < SECRETS; i++) {
      const ns = i % 2 === 0 ? 'team-a' : 'team-b';
      const key = `/registry/secrets/${ns}/s${i}`;
      await client.put(enc(key), await writer.transformToStorage(encodeSecret(ns, `s${i}`, { token: `t${i}` }), { authenticatedData: enc(key) }));
    }
    await client.put(enc('/registry/namespaces/team-a'), Buffer.from('{"kind":"Namespace","apiVersion":"v1","metadata":{"name":"team-a"}}'));
    await v2.close();
  });
  after(async () => {
    if (plugin && plugin.exitCode === null) {
      const exited = new Promise((r) => plugin.once('exit', r));
      plugin.kill('SIGTERM');
      await exited;
    }
    await client?.close();
    await etcd?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const conn = (cfg = config): string[] => ['--encryption-config', cfg, '--endpoints', etcd.endpoint];

  test('a wrong --etcd-prefix: scan, rewrite and decrypt --all exit 4 and name the prefix that holds the data', async () => {
    for (const args of [
      ['scan', ...conn()],
      ['rewrite', ...conn(), '--no-apiserver-check'],
      ['decrypt', ...conn(), '--all', '--show-secret-data'],
    ]) {
      const r = await runCli([...args, '--etcd-prefix', '/kubernetes.io']);
      assert.equal(r.code, 4, `${args[0]}: ${r.stderr}`);
      assert.equal(r.stdout, '', `${args[0]} printed a report for nothing`);
      assert.match(r.stderr, /no key under \/kubernetes\.io\/secrets\//);
      assert.match(r.stderr, /etcd holds Kubernetes data under \/registry \(e\.g\. \/registry\/namespaces\/team-a\)/);
      assert.match(r.stderr, /--allow-empty/);
    }
    const allowed = await runCli(['scan', ...conn(), '--etcd-prefix', '/kubernetes.io', '--allow-empty', '-o', 'json']);
    assert.equal(allowed.code, 0, allowed.stderr);
    assert.equal(JSON.parse(allowed.stdout).totals.keys, 0);
  });

  test('resources: [secret] (singular) in the config: exit 4 with "did you mean secrets"', async () => {
    const singular = writeFile(dir, 'enc-singular.yaml', kmsConfig(endpoint, '[secret]'));
    for (const args of [['scan', ...conn(singular)], ['rewrite', ...conn(singular), '--no-apiserver-check']]) {
      const r = await runCli(args);
      assert.equal(r.code, 4, `${args[0]}: ${r.stderr}`);
      assert.match(r.stderr, /secret: no key under \/registry\/secret\/ — did you mean "secrets"\? \(keys exist under \/registry\/secrets\/\)/);
    }
    const flag = await runCli(['scan', ...conn(), '--resource', 'configmap']);
    assert.equal(flag.code, 4, flag.stderr);
    assert.match(flag.stderr, /configmap: no key under \/registry\/configmap\//);
  });

  test('a plugin that cannot be reached: scan exits 1 naming the endpoint; rewrite refuses', async () => {
    const missing = `unix://${join(dir, 'no-such.sock')}`;
    const wrong = writeFile(dir, 'enc-wrong-socket.yaml', kmsConfig(missing));
    const s = await runCli(['scan', ...conn(wrong)]);
    assert.equal(s.code, 1, s.stderr);
    assert.equal(s.stdout, '');
    assert.ok(s.stderr.includes(`kms v2 provider "kms2" (${missing})`), s.stderr);
    assert.match(s.stderr, /Start the plugin or fix its endpoint/);
    const r = await runCli(['rewrite', ...conn(wrong), '--no-apiserver-check']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /cannot rewrite: kms v2 provider "kms2"/);
  });

  test('decrypt asks a plugin that never answers once, then reports each of its values without calling it again', async () => {
    // A plugin process that accepts HTTP/2 streams and never answers them: every call waits its timeout.
    const socket = join(dir, 'hanging.sock');
    let streams = 0;
    const hanging: Http2Server = createH2Server();
    hanging.on('stream', () => void streams++);
    await new Promise<void>((resolve) => hanging.listen(socket, resolve));
    try {
      const cfg = writeFile(dir, 'enc-hanging.yaml', kmsConfig(`unix://${socket}`, '[secrets]', '1s'));
      const r = await runCli(['decrypt', ...conn(cfg), '--all', '-o', 'json']);
      assert.equal(r.code, 3, r.stderr);
      assert.match(r.stderr, /warning: kms v2 provider "kms2" .*values stored with it cannot be decrypted now/);
      assert.doesNotMatch(r.stderr, /can still be decrypted/);
      assert.equal(r.stderr.match(/cannot decrypt \(stored as kms-v2\/kms2/g)?.length, SECRETS, r.stderr);
      assert.equal(streams, 1, 'the plugin was called again after its probe failed');
      const records = JSON.parse(r.stdout) as { error?: string }[];
      assert.equal(records.filter((x) => x.error !== undefined).length, SECRETS);
    } finally {
      await new Promise((resolve) => hanging.close(resolve));
    }
  });

  test('keys retire --check-etcd refuses while values are still under the key, retires once they moved', async () => {
    const list = (): { keys: { id: string; active: boolean }[]; retired: { id: string }[] } =>
      JSON.parse(execFileSync(process.execPath, [CLI, 'keys', 'list', '--keyring', keyring, '-o', 'json'], { encoding: 'utf8' }));
    const old = list().keys.find((k) => k.active)!.id;
    execFileSync(process.execPath, [CLI, 'keys', 'rotate', '--keyring', keyring], { stdio: 'ignore' });
    plugin.kill('SIGHUP');
    const fresh = list().keys.find((k) => k.active)!.id;
    const statusClient = createKmsV2Client({ endpoint, timeoutMs: 5000 });
    try {
      while ((await statusClient.status()).keyID !== fresh) await new Promise((r) => setTimeout(r, 50));
    } finally {
      await statusClient.close();
    }
    const retire = ['keys', 'retire', old, '--keyring', keyring, '--check-etcd', '--endpoints', etcd.endpoint];
    const refused = await runCli(retire);
    assert.equal(refused.code, 3, refused.stderr);
    assert.match(refused.stderr, new RegExp(`etcd still holds ${SECRETS} value\\(s\\) stored under key_id ${old}`));
    assert.match(refused.stderr, /\/registry\/secrets\/team-a\/s0/);
    assert.match(refused.stderr, /every etcd snapshot taken while values were stored under this key can no longer\s+be decrypted/);
    assert.match(refused.stderr, /not retiring/);
    assert.ok(list().keys.some((k) => k.id === old), 'the key was retired although values need it');

    const rw = await runCli(['rewrite', ...conn(), '--no-apiserver-check', '-o', 'json']);
    assert.equal(rw.code, 0, rw.stderr);
    assert.equal(JSON.parse(rw.stdout).counts.rewritten, SECRETS);
    const ok = await runCli(retire);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, new RegExp(`is stored under key_id ${old}`));
    assert.deepEqual(list().retired.map((k) => k.id), [old]);
    assert.ok(!readFileSync(keyring, 'utf8').includes(`"id": "${old}"`) || list().keys.every((k) => k.id !== old));
  });
});
