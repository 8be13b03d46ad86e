// scan, rewrite and decrypt through the real CLI against a real etcd, on a mixed dataset written
// with the local providers (plaintext, aescbc, aesgcm, secretbox) plus tampered and foreign values.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { EtcdClient, prefixRangeEnd, type KeyValue } from '../../src/etcd/client.js';
import { describeStoredValue } from '../../src/transformers/describe.js';
import { etcdBinary, startEtcd, type RunningEtcd } from '../helpers/etcd.js';
import { enc, encodeSecret, keyedWriter, keysYaml, newKey, runCli, writeFile } from './fixtures.js';

const cbc1 = newKey('cbc1');
const cbc2 = newKey('cbc2');
const gcm1 = newKey('gcm1');
const sb1 = newKey('sb1');
const foreign = newKey('cbc9');

// The cluster's configuration: aesgcm writes; the older keys stay readable; identity last.
const CONFIG = `apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - aesgcm: {keys: [${keysYaml([gcm1])}]}
      - aescbc: {keys: [${keysYaml([cbc2, cbc1])}]}
      - secretbox: {keys: [${keysYaml([sb1])}]}
      - identity: {}
  - resources: [configmaps]
    providers:
      - identity: {}
`;

interface Seeded {
  readonly key: string;
  readonly plaintext: Buffer;
  readonly kind: string;
}

async function seed(client: EtcdClient): Promise<Seeded[]> {
  const out: Seeded[] = [];
  const put = async (key: string, plaintext: Buffer, kind: string, stored: Buffer): Promise<void> => {
    await client.put(enc(key), stored);
    out.push({ key, plaintext, kind });
  };
  const ctx = (key: string) => ({ authenticatedData: enc(key) });
  const groups: [string, number, ((key: string, p: Buffer) => Promise<Buffer>) | undefined][] = [
    ['plain', 10, undefined],
    ['cbc1', 7, (k, p) => keyedWriter('aescbc', cbc1).transformToStorage(p, ctx(k))],
    ['cbc2', 5, (k, p) => keyedWriter('aescbc', cbc2).transformToStorage(p, ctx(k))],
    ['gcm1', 6, (k, p) => keyedWriter('aesgcm', gcm1).transformToStorage(p, ctx(k))],
    ['sb1', 4, (k, p) => keyedWriter('secretbox', sb1).transformToStorage(p, ctx(k))],
  ];
  for (const [kind, n, write] of groups) {
    for (let i = 0; i < n; i++) {
      const key = `/registry/secrets/ns-${kind}/s${i}`;
      const plaintext = encodeSecret(`ns-${kind}`, `s${i}`, { password: `pw-${kind}-${i}` });
      await put(key, plaintext, kind, write ? await write(key, plaintext) : plaintext);
    }
  }
  // two aesgcm values with a flipped tag byte, one aescbc value under a key the config does not have
  for (let i = 0; i < 2; i++) {
    const key = `/registry/secrets/ns-tampered/t${i}`;
    const plaintext = encodeSecret('ns-tampered', `t${i}`, { password: 'x' });
    const stored = await keyedWriter('aesgcm', gcm1).transformToStorage(plaintext, ctx(key));
    stored[stored.length - 1] ^= 0x01;
    await put(key, plaintext, 'tampered', stored);
  }
  {
    const key = '/registry/secrets/ns-foreign/f0';
    const plaintext = encodeSecret('ns-foreign', 'f0', { password: 'y' });
    await put(key, plaintext, 'foreign', await keyedWriter('aescbc', foreign).transformToStorage(plaintext, ctx(key)));
  }
  for (let i = 0; i < 3; i++) {
    await put(`/registry/configmaps/default/c${i}`, enc(`{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"c${i}"}}`), 'configmap', enc(`{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"c${i}"}}`));
  }
  return out;
}

async function all(client: EtcdClient, prefix: string): Promise<Map<string, KeyValue>> {
  const m = new Map<string, KeyValue>();
  for await (const page of client.pages(enc(prefix), prefixRangeEnd(enc(prefix)))) {
    for (const kv of page) m.set(kv.key.toString(), kv);
  }
  return m;
}

describe('atrest scan / rewrite / decrypt on a mixed dataset (local providers)', () => {
  let etcd: RunningEtcd;
  let client: EtcdClient;
  let dir: string;
  let configFile: string;
  let seeded: Seeded[];
  let conn: string[];

  before(async () => {
    etcd = await startEtcd();
    client = new EtcdClient({ endpoints: [etcd.endpoint] });
    dir = mkdtempSync(join(tmpdir(), 'atrest-cli-local-'));
    configFile = writeFile(dir, 'encryption.yaml', CONFIG);
    seeded = await seed(client);
    conn = ['--encryption-config', configFile, '--endpoints', etcd.endpoint];
  });
  after(async () => {
    await client?.close();
    await etcd?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('scan without decrypting counts every shape exactly and exits 3 for plaintext Secrets', async () => {
    const r = await runCli(['scan', ...conn, '-o', 'json']);
    assert.equal(r.code, 3, r.stderr);
    const report = JSON.parse(r.stdout);
    const secrets = report.resources.find((x: { resource: string }) => x.resource === 'secrets');
    assert.equal(secrets.keys, 35);
    assert.equal(secrets.plaintext, 10);
    assert.equal(secrets.encrypted, 25);
    assert.deepEqual(secrets.formats, {
      plaintext: 10,
      'aescbc/cbc1': 7,
      'aescbc/cbc2': 5,
      'aesgcm/gcm1': 8,
      'secretbox/sb1': 4,
      'aescbc/cbc9': 1,
    });
    // without decrypting, the tampered gcm1 values look current; the cbc9 one is unreadable
    assert.equal(secrets.current, 8);
    assert.equal(secrets.stale, 26);
    assert.equal(secrets.undecryptable, 1);
    assert.equal(secrets.writeProvider, 'aesgcm/gcm1');
    const cms = report.resources.find((x: { resource: string }) => x.resource === 'configmaps');
    assert.deepEqual([cms.keys, cms.plaintext, cms.current, cms.mustEncrypt], [3, 3, 3, false]);
    assert.equal(report.findingsTotal, 11);
    assert.equal(report.findings.filter((f: { problem: string }) => f.problem === 'plaintext').length, 10);
  });

  test('scan --decrypt proves which values decrypt and names the providers tried', async () => {
    const r = await runCli(['scan', ...conn, '--decrypt', '-o', 'json']);
    assert.equal(r.code, 3, r.stderr);
    const report = JSON.parse(r.stdout);
    const secrets = report.resources.find((x: { resource: string }) => x.resource === 'secrets');
    assert.deepEqual(
      [secrets.keys, secrets.current, secrets.stale, secrets.undecryptable],
      [35, 6, 26, 3],
    );
    const bad = report.findings.filter((f: { problem: string }) => f.problem === 'undecryptable');
    assert.deepEqual(bad.map((f: { key: string }) => f.key).sort(), [
      '/registry/secrets/ns-foreign/f0',
      '/registry/secrets/ns-tampered/t0',
      '/registry/secrets/ns-tampered/t1',
    ]);
    const tampered = bad.find((f: { key: string }) => f.key.endsWith('t0'));
    assert.deepEqual(tampered.providersTried, ['aesgcm (resources[0].providers[0]) key "gcm1"']);
    const foreignFinding = bad.find((f: { key: string }) => f.key.endsWith('f0'));
    assert.match(foreignFinding.reason, /no matching key was found/);
  });

  test('scan prints a table with a verdict for people', async () => {
    const r = await runCli(['scan', ...conn, '--resource', 'secrets']);
    assert.equal(r.code, 3);
    assert.match(r.stdout, /^RESOURCE\s+KEYS\s+PLAINTEXT/m);
    assert.match(r.stdout, /^secrets\s+35\s+10\s+25\s+8\s+26\s+1\s+aesgcm\/gcm1/m);
    assert.match(r.stdout, /scan: NOT OK: 11 value\(s\)/);
    assert.doesNotMatch(r.stdout, /configmaps/);
  });

  test('decrypt prints one Secret with its data redacted, and shows it only when asked', async () => {
    const key = '/registry/secrets/ns-cbc1/s3';
    const r = await runCli(['decrypt', ...conn, '--etcd-key', key]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /# \/registry\/secrets\/ns-cbc1\/s3 \(stored as aescbc\/cbc1, stale; protobuf\)/);
    assert.match(r.stdout, /kind: Secret/);
    assert.match(r.stdout, /namespace: ns-cbc1/);
    assert.match(r.stdout, /password: REDACTED/);
    assert.doesNotMatch(r.stdout, /pw-cbc1-3/);
    const shown = await runCli(['decrypt', ...conn, '--etcd-key', key, '-o', 'json', '--show-secret-data']);
    assert.equal(shown.code, 0, shown.stderr);
    const rec = JSON.parse(shown.stdout);
    assert.equal(Buffer.from(rec.object.data.password, 'base64').toString(), 'pw-cbc1-3');
  });

  test('decrypt reports a tampered value with its key and the providers tried, and prints no plaintext', async () => {
    const r = await runCli(['decrypt', ...conn, '--etcd-key', '/registry/secrets/ns-tampered/t1', '--show-secret-data']);
    assert.equal(r.code, 3);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /\/registry\/secrets\/ns-tampered\/t1: cannot decrypt \(stored as aesgcm\/gcm1; tried aesgcm \(resources\[0\]\.providers\[0\]\) key "gcm1"\)/);
  });

  test('decrypt --value-file reads an extracted value from stdin, bound to its etcd key', async () => {
    const key = '/registry/secrets/ns-gcm1/s0';
    const kv = await client.get(enc(key));
    const r = await runCli(['decrypt', ...conn, '--etcd-key', key, '--value-file', '-', '-o', 'raw', '--show-secret-data'], { stdin: kv!.value });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, seeded.find((s) => s.key === key)!.plaintext.toString());
    // the same bytes under another key fail: aesgcm binds the value to its key
    const moved = await runCli(['decrypt', ...conn, '--etcd-key', '/registry/secrets/ns-gcm1/other', '--value-file', '-'], { stdin: kv!.value });
    assert.equal(moved.code, 3);
    assert.match(moved.stderr, /cannot decrypt/);
  });

  test('rewrite refuses to start while undecryptable values exist, and writes nothing', async () => {
    const before = await all(client, '/registry/');
    const r = await runCli(['rewrite', ...conn]);
    assert.equal(r.code, 3);
    assert.match(r.stderr, /refusing to rewrite: 3 value\(s\) cannot be decrypted/);
    assert.match(r.stderr, /\/registry\/secrets\/ns-foreign\/f0 \(aescbc\/cbc9; tried/);
    const afterRun = await all(client, '/registry/');
    assert.equal(afterRun.size, before.size);
    for (const [k, kv] of before) assert.equal(afterRun.get(k)!.modRevision, kv.modRevision, k);
  });

  test('rewrite --dry-run reports what it would do and writes nothing', async () => {
    const before = await all(client, '/registry/');
    const r = await runCli(['rewrite', ...conn, '--dry-run', '--skip-undecryptable', '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.deepEqual(report.preflight, { scanned: 38, toRewrite: 26, current: 9, undecryptable: 3 });
    const afterRun = await all(client, '/registry/');
    for (const [k, kv] of before) assert.equal(afterRun.get(k)!.modRevision, kv.modRevision, k);
  });

  test('rewrite --skip-undecryptable converges to the write provider and leaves undecryptable values untouched', async () => {
    const before = await all(client, '/registry/');
    const r = await runCli(['rewrite', ...conn, '--skip-undecryptable', '--concurrency', '4', '-o', 'json']);
    assert.equal(r.code, 3, r.stderr); // converged, but undecryptable values remain: not a clean exit
    const report = JSON.parse(r.stdout);
    assert.equal(report.converged, true);
    assert.equal(report.counts.rewritten, 26);
    assert.equal(report.counts.alreadyCurrent, 9);
    assert.equal(report.counts.failed, 0);
    assert.equal(report.undecryptable.length, 3);
    assert.equal(report.finalScan.totals.stale, 0);
    const afterRun = await all(client, '/registry/');
    const gcm = keyedWriter('aesgcm', gcm1);
    for (const s of seeded) {
      const kv = afterRun.get(s.key)!;
      if (s.kind === 'tampered' || s.kind === 'foreign' || s.kind === 'configmap' || s.kind === 'gcm1') {
        assert.equal(kv.modRevision, before.get(s.key)!.modRevision, `${s.key} must be untouched`);
        continue;
      }
      assert.equal(describeStoredValue(kv.value).format, 'aesgcm', s.key);
      assert.equal(describeStoredValue(kv.value).keyName, 'gcm1');
      const back = await gcm.transformFromStorage(kv.value, { authenticatedData: enc(s.key) });
      assert.deepEqual(back.data, s.plaintext, s.key);
    }
    const again = await runCli(['scan', ...conn, '--decrypt', '-o', 'json']);
    const secrets = JSON.parse(again.stdout).resources.find((x: { resource: string }) => x.resource === 'secrets');
    assert.deepEqual([secrets.current, secrets.stale, secrets.plaintext, secrets.undecryptable], [32, 0, 0, 3]);
  });

  test('decrypt --snapshot reads an etcd backup without etcd and with the old keys', async () => {
    const snap = join(dir, 'backup.db');
    execFileSync(etcdBinary('etcdctl'), ['--endpoints', etcd.endpoint, 'snapshot', 'save', snap], { stdio: 'ignore' });
    const r = await runCli([
      'decrypt', '--encryption-config', configFile, '--snapshot', snap, '--all', '--resource', 'secrets',
      '-o', 'json', '--show-secret-data', '--endpoints', 'http://127.0.0.1:1',
    ]);
    assert.equal(r.code, 3); // the three undecryptable values are reported
    const records = JSON.parse(r.stdout) as { key: string; error?: string; object?: { data: { password: string } } }[];
    assert.equal(records.length, 35);
    assert.equal(records.filter((x) => x.error !== undefined).length, 3);
    const s = records.find((x) => x.key === '/registry/secrets/ns-sb1/s2')!;
    assert.equal(Buffer.from(s.object!.data.password, 'base64').toString(), 'pw-sb1-2');
    assert.equal((r.stderr.match(/cannot decrypt/g) ?? []).length, 3);
    assert.ok(existsSync(snap));
  });

  test('bad flags exit with status 2 and a message naming the flag', async () => {
    const r = await runCli(['rewrite', ...conn, '--concurrency', '0']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--concurrency: "0" must be an integer >= 1/);
    const tooMany = await runCli(['rewrite', ...conn, '--txn-keys', '65']);
    assert.equal(tooMany.code, 2);
    assert.match(tooMany.stderr, /--txn-keys: "65" must be at most 64/);
  });
});
