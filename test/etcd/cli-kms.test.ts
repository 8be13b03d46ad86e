// scan, rewrite and decrypt with kms v1 and kms v2 values, through a running `atrest serve` plugin
// (keyring backend) on a real UNIX socket, against a real etcd.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createKmsV1Client, createKmsV2Client } from '../../src/kms-client/index.js';
import { createKmsV1Transformer } from '../../src/transformers/kms-v1.js';
import { createKmsV2Transformer } from '../../src/transformers/kms-v2.js';
import { createPrefixTransformers } from '../../src/transformers/prefix.js';
import { describeStoredValue } from '../../src/transformers/describe.js';
import { EtcdClient, prefixRangeEnd } from '../../src/etcd/client.js';
import { etcdBinary, startEtcd, type RunningEtcd } from '../helpers/etcd.js';
import { CLI, enc, encodeSecret, keyedWriter, keysYaml, newKey, runCli, writeFile } from './fixtures.js';

const cbc = newKey('cbc1');

async function waitFor(path: string, proc: ChildProcess): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!existsSync(path)) {
    if (proc.exitCode !== null) throw new Error(`atrest serve exited with ${proc.exitCode}`);
    if (Date.now() > deadline) throw new Error(`${path} did not appear`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('etcd commands with kms v1 and kms v2 values through a running atrest plugin', () => {
  let etcd: RunningEtcd;
  let client: EtcdClient;
  let dir: string;
  let plugin: ChildProcess;
  let keyring: string;
  let endpoint: string;
  let configFile: string;
  const plaintexts = new Map<string, Buffer>();

  before(async () => {
    etcd = await startEtcd();
    client = new EtcdClient({ endpoints: [etcd.endpoint] });
    dir = mkdtempSync(join(tmpdir(), 'atrest-cli-kms-'));
    keyring = join(dir, 'keyring.json');
    execFileSync(process.execPath, [CLI, 'keys', 'init', '--keyring', keyring], { stdio: 'ignore' });
    const socket = join(dir, 'kms.sock');
    endpoint = `unix://${socket}`;
    plugin = spawn(process.execPath, [CLI, 'serve', '--listen', endpoint, '--keyring', keyring, '--health-listen', 'off', '--log-level', 'warn'], { stdio: 'ignore' });
    await waitFor(socket, plugin);
    configFile = writeFile(dir, 'enc.yaml', `apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - kms: {apiVersion: v2, name: kms2, endpoint: "${endpoint}", timeout: 5s}
      - kms: {apiVersion: v1, name: kms1, endpoint: "${endpoint}", timeout: 5s, cachesize: 100}
      - aescbc: {keys: [${keysYaml([cbc])}]}
      - identity: {}
`);
    // what kube-apiservers with each provider first wrote earlier
    const v1 = createKmsV1Client({ endpoint, timeoutMs: 5000 });
    const v2 = createKmsV2Client({ endpoint, timeoutMs: 5000 });
    const v1Writer = createPrefixTransformers([createKmsV1Transformer({ name: 'kms1', service: v1, cacheSize: 100 })]);
    const v2t = createKmsV2Transformer({ name: 'kms2', service: v2 });
    assert.equal((await v2t.refreshStatus()).ok, true);
    const v2Writer = createPrefixTransformers([v2t]);
    const writers: [string, number, ((k: string, p: Buffer) => Promise<Buffer>) | undefined][] = [
      ['plain', 3, undefined],
      ['cbc', 4, (k, p) => keyedWriter('aescbc', cbc).transformToStorage(p, { authenticatedData: enc(k) })],
      ['kms1', 5, (k, p) => v1Writer.transformToStorage(p, { authenticatedData: enc(k) })],
      ['kms2', 6, (k, p) => v2Writer.transformToStorage(p, { authenticatedData: enc(k) })],
    ];
    for (const [kind, n, write] of writers) {
      for (let i = 0; i < n; i++) {
        const key = `/registry/secrets/${kind}/s${i}`;
        const plain = encodeSecret(kind, `s${i}`, { token: `${kind}-${i}` });
        plaintexts.set(key, plain);
        await client.put(enc(key), write ? await write(key, plain) : plain);
      }
    }
    await v1.close();
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

  const conn = (): string[] => ['--encryption-config', configFile, '--endpoints', etcd.endpoint];

  async function secretsScan(decrypt: boolean): Promise<Record<string, unknown> & { formats: Record<string, number> }> {
    const r = await runCli(['scan', ...conn(), ...(decrypt ? ['--decrypt'] : []), '-o', 'json']);
    assert.ok(r.code === 0 || r.code === 3, r.stderr);
    return JSON.parse(r.stdout).resources.find((x: { resource: string }) => x.resource === 'secrets');
  }

  test('scan tells kms v1, kms v2 (with key_id), aescbc and plaintext apart, and all of them decrypt', async () => {
    const s = await secretsScan(true);
    assert.equal(s.keys, 18);
    assert.equal(s.plaintext, 3);
    assert.equal(s.current, 6);
    assert.equal(s.stale, 12);
    assert.equal(s.undecryptable, 0);
    const kms2Label = Object.keys(s.formats).find((f) => f.startsWith('kms-v2/kms2 key_id='))!;
    assert.deepEqual(s.formats, { plaintext: 3, 'aescbc/cbc1': 4, 'kms-v1/kms1': 5, [kms2Label]: 6 });
    assert.equal(s.writeProvider, kms2Label);
  });

  test('rewrite converges every value to kms v2 with the plugin key, preserving each plaintext', async () => {
    const r = await runCli(['rewrite', ...conn(), '--no-apiserver-check', '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.equal(report.counts.rewritten, 12);
    assert.equal(report.converged, true);
    const t = createKmsV2Transformer({ name: 'kms2', service: createKmsV2Client({ endpoint, timeoutMs: 5000 }), allowReadWithoutStatus: true });
    const prefix = enc('/registry/secrets/');
    for await (const page of client.pages(prefix, prefixRangeEnd(prefix))) {
      for (const kv of page) {
        assert.equal(describeStoredValue(kv.value).format, 'kms-v2');
        const back = await t.transformFromStorage(kv.value.subarray(t.prefix.length), { authenticatedData: kv.key });
        assert.deepEqual(back.data, plaintexts.get(kv.key.toString()));
      }
    }
  });

  test('after the plugin rotates its key, scan reports every value stale and rewrite moves them to the new key_id', async () => {
    const before = await secretsScan(false);
    const oldLabel = Object.keys(before.formats)[0]!;
    execFileSync(process.execPath, [CLI, 'keys', 'rotate', '--keyring', keyring], { stdio: 'ignore' });
    plugin.kill('SIGHUP');
    // Wait for the reload (an event inside the plugin) by what it changes; the deadline only turns
    // a hang into a failure.
    let s = before;
    const deadline = Date.now() + 60_000;
    while (s.stale !== 18 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      s = await secretsScan(false);
    }
    assert.equal(s.stale, 18);
    assert.notEqual(s.writeProvider, oldLabel);
    const r = await runCli(['rewrite', ...conn(), '--no-apiserver-check', '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).counts.rewritten, 18);
    const after = await secretsScan(true);
    assert.deepEqual([after.current, after.stale, after.undecryptable], [18, 0, 0]);
    assert.deepEqual(Object.keys(after.formats), [s.writeProvider]);
  });

  test('decrypt --snapshot recovers kms v2 Secrets from a backup through the plugin', async () => {
    const snap = join(dir, 'backup.db');
    execFileSync(etcdBinary('etcdctl'), ['--endpoints', etcd.endpoint, 'snapshot', 'save', snap], { stdio: 'ignore' });
    const r = await runCli(['decrypt', '--encryption-config', configFile, '--snapshot', snap, '--etcd-key', '/registry/secrets/kms1/s4', '-o', 'json', '--show-secret-data']);
    assert.equal(r.code, 0, r.stderr);
    const rec = JSON.parse(r.stdout);
    assert.match(rec.stored, /^kms-v2\/kms2 key_id=/);
    assert.equal(Buffer.from(rec.object.data.token, 'base64').toString(), 'kms1-4');
  });
});
