import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EtcdClient } from '../../src/etcd/client.js';
import { startEtcd, type RunningEtcd } from '../helpers/etcd.js';
import { enc, encodeSecret, keyedWriter, keysYaml, newKey, runCli, writeFile } from './fixtures.js';

describe('the etcd commands over TLS with client certificates', () => {
  let etcd: RunningEtcd;
  let dir: string;
  let configFile: string;
  const key = newKey('k1');

  before(async () => {
    etcd = await startEtcd({ tls: true });
    dir = mkdtempSync(join(tmpdir(), 'atrest-cli-tls-'));
    configFile = writeFile(dir, 'enc.yaml', `apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - secretbox: {keys: [${keysYaml([key])}]}
`);
    const tls = etcd.tls!;
    const client = new EtcdClient({ endpoints: [etcd.endpoint], tls: { ca: tls.ca, cert: tls.cert, key: tls.key } });
    const k = '/registry/secrets/default/tls-secret';
    const plain = encodeSecret('default', 'tls-secret', { token: 'abc' });
    await client.put(enc(k), await keyedWriter('secretbox', key).transformToStorage(plain, { authenticatedData: enc(k) }));
    await client.close();
  });
  after(async () => {
    await etcd?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('scan and decrypt connect with --cacert, --cert and --key', async () => {
    const tls = etcd.tls!;
    const flags = ['--encryption-config', configFile, '--endpoints', etcd.endpoint, '--cacert', tls.caFile, '--cert', tls.certFile, '--key', tls.keyFile];
    const s = await runCli(['scan', ...flags, '--decrypt', '-o', 'json']);
    assert.equal(s.code, 0, s.stderr);
    assert.deepEqual(JSON.parse(s.stdout).totals, { keys: 1, plaintext: 0, encrypted: 1, current: 1, stale: 0, unknown: 0, undecryptable: 0, kms: 0, recoverySealed: 0 });
    const d = await runCli(['decrypt', ...flags, '--etcd-key', '/registry/secrets/default/tls-secret', '-o', 'json']);
    assert.equal(d.code, 0, d.stderr);
    assert.equal(JSON.parse(d.stdout).object.metadata.name, 'tls-secret');
  });

  test('fails clearly without the client certificate', async () => {
    const r = await runCli(['scan', '--encryption-config', configFile, '--endpoints', etcd.endpoint, '--cacert', etcd.tls!.caFile]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /etcd|certificate|socket/i);
  });
});
