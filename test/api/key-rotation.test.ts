// Rotating the kms v2 key with a real kube-apiserver: `atrest rewrite` and `scan --expect-key` refuse
// to call the rotation done while the API server still writes with the old key_id (read from its
// /metrics), and `keys retire --check-etcd` then agrees. The API server talks to its own plugin
// process; the operator's tools to another one on the same keyring, as on a control-plane node
// where one plugin was reloaded (SIGHUP) and another was forgotten. That makes "not yet" deterministic
// instead of a race with the API server's once-a-minute Status poll.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createKmsV2Client } from '../../src/kms-client/index.js';
import { describeStoredValue } from '../../src/transformers/describe.js';
import { CLI, runCli } from '../etcd/fixtures.js';
import { startControlPlane, storedPrefixes, type ControlPlane } from './control-plane.js';

async function waitForSocket(path: string, proc: ChildProcess): Promise<void> {
  while (!existsSync(path)) {
    if (proc.exitCode !== null) throw new Error(`atrest serve exited with ${proc.exitCode}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function waitForKeyID(endpoint: string, keyID: string): Promise<void> {
  const c = createKmsV2Client({ endpoint, timeoutMs: 5000 });
  try {
    while ((await c.status()).keyID !== keyID) await new Promise((r) => setTimeout(r, 50));
  } finally {
    await c.close();
  }
}

const config = (endpoint: string): string => `apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - kms: {apiVersion: v2, name: atrest, endpoint: "${endpoint}", timeout: 5s}
      - identity: {}
`;

describe('kms v2 key rotation with a real kube-apiserver', () => {
  let cp: ControlPlane;
  const plugins: ChildProcess[] = [];
  let keyring: string;
  let apiserverSocket: string;
  let toolSocket: string;
  let apiserverConfig: string;
  let toolConfig: string;

  const startPlugin = async (socket: string): Promise<ChildProcess> => {
    const p = spawn(process.execPath, [CLI, 'serve', '--listen', `unix://${socket}`, '--keyring', keyring, '--health-listen', 'off', '--log-level', 'warn'], { stdio: 'ignore' });
    plugins.push(p);
    await waitForSocket(socket, p);
    return p;
  };
  const keysList = (): { keys: { id: string; active: boolean }[]; retired: { id: string }[] } =>
    JSON.parse(execFileSync(process.execPath, [CLI, 'keys', 'list', '--keyring', keyring, '-o', 'json'], { encoding: 'utf8' }));
  const storedKeyIDs = (): string[] =>
    [...storedPrefixes(cp, '/registry/secrets/', 4096).values()].map((v) => describeStoredValue(Buffer.from(v, 'latin1')).keyID ?? '?');
  const conn = (): string[] => ['--encryption-config', toolConfig, '--endpoints', cp.etcdUrl];

  before(async () => {
    cp = await startControlPlane();
    keyring = join(cp.dir, 'keyring.json');
    execFileSync(process.execPath, [CLI, 'keys', 'init', '--keyring', keyring], { stdio: 'ignore' });
    apiserverSocket = join(cp.dir, 'kms-apiserver.sock');
    toolSocket = join(cp.dir, 'kms-tools.sock');
    await startPlugin(apiserverSocket);
    await startPlugin(toolSocket);
    apiserverConfig = join(cp.dir, 'enc-apiserver.yaml');
    toolConfig = join(cp.dir, 'enc-tools.yaml');
    writeFileSync(apiserverConfig, config(`unix://${apiserverSocket}`));
    writeFileSync(toolConfig, config(`unix://${toolSocket}`));
    await cp.restartApiserver(apiserverConfig);
    cp.kubectl(['create', 'namespace', 'rot']);
    for (let i = 0; i < 5; i++) cp.kubectl(['create', 'secret', 'generic', `s${i}`, '-n', 'rot', `--from-literal=k=v${i}`]);
  });
  after(async () => {
    for (const p of plugins) {
      if (p.exitCode === null) {
        const exited = new Promise((r) => p.once('exit', r));
        p.kill('SIGTERM');
        await exited;
      }
    }
    await cp?.stop();
  });

  test('rewrite refuses, writing nothing, until the API server writes with the new key_id; then converges and retire agrees', async () => {
    const old = keysList().keys.find((k) => k.active)!.id;
    assert.deepEqual(new Set(storedKeyIDs()), new Set([old]));

    const unconfirmed = await runCli(['rewrite', ...conn()]);
    assert.equal(unconfirmed.code, 2, unconfirmed.stderr);
    assert.match(unconfirmed.stderr, /--kubeconfig FILE/);
    assert.match(unconfirmed.stderr, /--no-apiserver-check when no API server uses this etcd/);

    execFileSync(process.execPath, [CLI, 'keys', 'rotate', '--keyring', keyring], { stdio: 'ignore' });
    const fresh = keysList().keys.find((k) => k.active)!.id;
    plugins[1]!.kill('SIGHUP'); // the tools' plugin only: the API server's plugin still serves the old key
    await waitForKeyID(`unix://${toolSocket}`, fresh);

    const early = await runCli(['rewrite', ...conn(), '--kubeconfig', cp.kubeconfig]);
    assert.equal(early.code, 3, early.stderr);
    assert.match(early.stderr, /not every kube-apiserver writes with the plugin's current key/);
    assert.match(early.stderr, /still writes with the old key/);
    assert.match(early.stderr, /do not retire or remove any older key/);
    assert.doesNotMatch(early.stdout, /converged/);
    assert.deepEqual(new Set(storedKeyIDs()), new Set([old]), 'the refused rewrite wrote something');
    // what a "converged" at this point would have hidden: the API server still writes the old key_id
    cp.kubectl(['create', 'secret', 'generic', 'late', '-n', 'rot', '--from-literal=k=late']);
    assert.equal(describeStoredValue(Buffer.from(storedPrefixes(cp, '/registry/secrets/rot/late', 4096).get('/registry/secrets/rot/late')!, 'latin1')).keyID, old);

    const expectEarly = await runCli(['scan', ...conn(), '--expect-key', fresh, '--kubeconfig', cp.kubeconfig]);
    assert.equal(expectEarly.code, 3, expectEarly.stderr);
    assert.match(expectEarly.stdout, /expect-key: NOT OK/);

    // The fix: reload the API server's plugin too, and let the API server poll it (a restart does).
    plugins[0]!.kill('SIGHUP');
    await waitForKeyID(`unix://${apiserverSocket}`, fresh);
    await cp.restartApiserver(apiserverConfig);

    const rewrite = await runCli(['rewrite', ...conn(), '--kubeconfig', cp.kubeconfig]);
    assert.equal(rewrite.code, 0, rewrite.stderr);
    assert.match(rewrite.stdout, /writes with the current key_id of "atrest"/);
    assert.match(rewrite.stdout, /\nconverged: /);
    assert.deepEqual(new Set(storedKeyIDs()), new Set([fresh]));

    const expectOld = await runCli(['scan', ...conn(), '--expect-key', old, '--kubeconfig', cp.kubeconfig]);
    assert.equal(expectOld.code, 3, expectOld.stderr);
    assert.match(expectOld.stdout, new RegExp(`reports key_id ${fresh}, not ${old}`));
    const expectNew = await runCli(['scan', ...conn(), '--expect-key', fresh, '--kubeconfig', cp.kubeconfig]);
    assert.equal(expectNew.code, 0, expectNew.stderr + expectNew.stdout);
    assert.match(expectNew.stdout, /expect-key: ok/);

    const retire = await runCli(['keys', 'retire', old, '--keyring', keyring, '--check-etcd', '--endpoints', cp.etcdUrl]);
    assert.equal(retire.code, 0, retire.stderr);
    assert.deepEqual(keysList().retired.map((k) => k.id), [old]);
  });
});
