// Runbook 5 of docs/operations.md as written: 3,000 Secrets in several namespaces, stored with kms v2
// through a real kube-apiserver, are recovered from an etcd snapshot into a fresh API server with the
// runbook's own commands (read out of the document and run by bash), then compared one by one.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CLI } from '../etcd/fixtures.js';
import { CACHE_BIN, startControlPlane, type ControlPlane } from './control-plane.js';

const NAMESPACES = ['bulk-0', 'bulk-1', 'bulk-2', 'default'];
const PER_NAMESPACE = 750;
const OPERATIONS_MD = fileURLToPath(new URL('../../../docs/operations.md', import.meta.url));

/** The shell block between the restore markers of docs/operations.md. */
export function restoreCommands(markdown: string): string {
  const m = /<!-- restore-commands: begin -->\s*```sh\n([\s\S]*?)```\s*<!-- restore-commands: end -->/.exec(markdown);
  if (!m) throw new Error('docs/operations.md has no restore-commands block');
  return m[1]!;
}

function run(cmd: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], env });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-8000)));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stderr }));
  });
}

const secretList = (ns: string): string =>
  JSON.stringify({
    apiVersion: 'v1',
    kind: 'List',
    items: Array.from({ length: PER_NAMESPACE }, (_, i) => ({
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: `s${i}`, namespace: ns, labels: { batch: ns } },
      data: { password: Buffer.from(`${ns}-pw-${i}`).toString('base64') },
    })),
  });

describe('runbook 5: recover Secrets from an etcd snapshot into a fresh cluster', () => {
  let work: string;
  let old: ControlPlane | undefined;
  let fresh: ControlPlane | undefined;
  let plugin: ChildProcess;

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'atrest-restore-'));
    const keyring = join(work, 'keyring.json');
    execFileSync(process.execPath, [CLI, 'keys', 'init', '--keyring', keyring], { stdio: 'ignore' });
    const socket = join(work, 'kms.sock');
    plugin = spawn(process.execPath, [CLI, 'serve', '--listen', `unix://${socket}`, '--keyring', keyring, '--health-listen', 'off', '--log-level', 'warn'], { stdio: 'ignore' });
    while (!existsSync(socket)) {
      if (plugin.exitCode !== null) throw new Error('atrest serve exited');
      await new Promise((r) => setTimeout(r, 50));
    }
    writeFileSync(
      join(work, 'enc-kms.yaml'),
      `apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - kms: {apiVersion: v2, name: atrest, endpoint: "unix://${socket}", timeout: 5s}
      - identity: {}
`,
      { mode: 0o600 },
    );
  });
  after(async () => {
    await old?.stop();
    await fresh?.stop();
    if (plugin && plugin.exitCode === null) {
      const exited = new Promise((r) => plugin.once('exit', r));
      plugin.kill('SIGTERM');
      await exited;
    }
    if (work) rmSync(work, { recursive: true, force: true });
  });

  test('3,000 kms v2 Secrets in four namespaces come back with their data, new uids and no last-applied annotation', async () => {
    old = await startControlPlane();
    await old.restartApiserver(join(work, 'enc-kms.yaml'));
    for (const ns of NAMESPACES.filter((n) => n !== 'default')) old.kubectl(['create', 'namespace', ns]);
    // one kubectl per namespace, in parallel: each sends its List's items one by one
    const lists = NAMESPACES.map((ns) => {
      const f = join(work, `create-${ns}.json`);
      writeFileSync(f, secretList(ns));
      return f;
    });
    const created = await Promise.all(lists.map((f) => run(join(CACHE_BIN, 'kubectl'), [`--kubeconfig=${old!.kubeconfig}`, 'create', '-f', f])));
    created.forEach((c) => assert.equal(c.code, 0, c.stderr));
    // an object as kubectl apply leaves it: the whole object (and old uid) in an annotation
    old.kubectl(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'applied', namespace: 'bulk-0' }, stringData: { k: 'applied-value' } }));
    const oldUid = old.kubectl(['get', 'secret', 'applied', '-n', 'bulk-0', '-o', 'jsonpath={.metadata.uid}']);
    const backup = join(work, 'backup.db');
    old.etcdctl(['snapshot', 'save', backup]);
    await old.stop(); // the cluster is gone; the plugin and its keyring stay
    old = undefined;

    fresh = await startControlPlane();
    await fresh.restartApiserver();
    const recovered = join(work, 'recovered.yaml');
    const script = [
      'set -euo pipefail',
      `atrest() { ${JSON.stringify(process.execPath)} ${JSON.stringify(CLI)} "$@"; }`,
      `kubectl() { ${JSON.stringify(join(CACHE_BIN, 'kubectl'))} --kubeconfig=${JSON.stringify(fresh.kubeconfig)} "$@"; }`,
      `BACKUP=${JSON.stringify(backup)}`,
      `OLD_CONFIG=${JSON.stringify(join(work, 'enc-kms.yaml'))}`,
      `RECOVERED=${JSON.stringify(recovered)}`,
      restoreCommands(readFileSync(OPERATIONS_MD, 'utf8')),
    ].join('\n');
    const r = await run('bash', ['-c', script]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(statSync(recovered).mode & 0o077, 0, 'recovered.yaml is readable by others');

    const listing = execFileSync(join(CACHE_BIN, 'kubectl'), [`--kubeconfig=${fresh.kubeconfig}`, 'get', 'secrets', '-A', '-o', 'json'], {
      encoding: 'utf8',
      maxBuffer: 256 * 1024 * 1024,
    });
    const got = JSON.parse(listing) as {
      items: { metadata: { name: string; namespace: string; uid: string; annotations?: Record<string, string>; labels?: Record<string, string> }; data?: Record<string, string> }[];
    };
    const byName = new Map(got.items.map((s) => [`${s.metadata.namespace}/${s.metadata.name}`, s]));
    assert.equal(byName.size, NAMESPACES.length * PER_NAMESPACE + 1);
    for (const ns of NAMESPACES) {
      for (let i = 0; i < PER_NAMESPACE; i++) {
        const s = byName.get(`${ns}/s${i}`);
        assert.ok(s, `${ns}/s${i} was not restored`);
        assert.equal(Buffer.from(s.data!['password']!, 'base64').toString(), `${ns}-pw-${i}`);
        assert.equal(s.metadata.labels?.['batch'], ns);
      }
    }
    const applied = byName.get('bulk-0/applied')!;
    assert.equal(Buffer.from(applied.data!['k']!, 'base64').toString(), 'applied-value');
    assert.notEqual(applied.metadata.uid, oldUid);
    assert.equal(applied.metadata.annotations?.['kubectl.kubernetes.io/last-applied-configuration'], undefined);
  });
});
