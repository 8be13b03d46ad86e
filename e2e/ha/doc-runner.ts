// Runs the runbook steps of docs/operations.md (doc-steps.ts) on the HA harness: commands through bash
// on a node (its /tmp/rb is its own directory; shell variables persist per node across blocks), the
// "[API server] deploy" steps as rolling restarts while client traffic keeps flowing, and checks the
// output the docs show: `exit N` lines, whole `cat FILE` outputs and each command's first output line,
// after masking what differs on every run (secrets, key ids, fingerprints, times, node paths).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmod, copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DOC_NODE_ROOT, NODES, type Cluster, type NodeName } from './cluster.js';
import type { DocCommand, DocStep } from './doc-steps.js';
import type { Traffic } from './traffic.js';
import { decodeStored } from './stored.js';
import { keyIDHash } from '../../src/health/plugin-metrics.js';

export interface Runner {
  readonly cluster: Cluster;
  readonly traffic: Traffic;
  /** What the scenario prints as it goes (node:test diagnostic lines). */
  readonly log: (line: string) => void;
}

/** Masks what legitimately differs between the recorded session and this run. */
export function normalize(text: string, nodeRoot: string): string {
  return text
    .split(nodeRoot)
    .join(DOC_NODE_ROOT)
    .replace(/(secret: )\S+/g, '$1SECRET')
    .replace(/k\d{8}T\d{6}Z-[0-9a-f]{16}/g, 'KEYID')
    .replace(/kf1-[0-9a-f]{24}/g, 'FINGERPRINT')
    .replace(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z/g, 'TIME')
    .replace(/[ \t]+/g, ' ')
    .trimEnd();
}

async function bash(
  runner: Runner,
  node: NodeName,
  command: string,
): Promise<{ code: number; output: string }> {
  const root = runner.cluster.nodes[node].root;
  const state = join(root, '.doc-shell-state');
  // Variables a command sets (NEW_KEY=$(...)) are kept for the next commands on the same node.
  const script = [
    'exec 2>&1',
    'set -o pipefail',
    '__base="$(compgen -v)"',
    `[ -f ${JSON.stringify(state)} ] && . ${JSON.stringify(state)}`,
    command,
    '__rc=$?',
    `for __v in $(compgen -v); do case "$__v" in __*) ;; *) grep -qx "$__v" <<<"$__base" || declare -p "$__v"; esac; done > ${JSON.stringify(state)} 2>/dev/null`,
    'exit $__rc',
  ].join('\n');
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-c', script], {
      cwd: root,
      env: runner.cluster.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (output += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (output += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, output }));
  });
}

async function runCommand(
  runner: Runner,
  node: NodeName,
  c: DocCommand,
  docs: string,
): Promise<void> {
  const root = runner.cluster.nodes[node].root;
  const text = c.text.split(DOC_NODE_ROOT).join(root);
  const where = `${docs}:${c.line} on node ${node}: $ ${c.text.split('\n')[0]}`;
  runner.log(`[${node}] $ ${c.text.split('\n')[0]}`);
  const { code, output } = await bash(runner, node, text);
  assert.equal(code, 0, `${where}\nexited ${code}:\n${output}`);
  const actual = normalize(output, root).split('\n');
  const shown = c.shown.map((l) => normalize(l, DOC_NODE_ROOT));
  while (shown.length > 0 && shown[shown.length - 1] === '') shown.pop();
  if (/echo "exit \$\?"\s*$/.test(c.text)) {
    const want = shown.findLast((l) => /^exit \d+$/.test(l));
    assert.ok(want !== undefined, `${where}: the docs show no "exit N" line`);
    assert.equal(actual[actual.length - 1], want, `${where}: exit status\n${output}`);
  }
  if (/^cat \S+$/.test(c.text)) {
    assert.deepEqual(actual, shown, `${where}: the file differs from the one the docs show`);
  } else if (shown.length > 0 && shown[0] !== '...') {
    assert.equal(actual[0], shown[0], `${where}: first output line\n${output}`);
  }
}

/** Copies FILE (written on node a) to `node` as its API server's config, node paths mapped. */
export async function placeConfig(cluster: Cluster, file: string, node: NodeName): Promise<string> {
  const text = await readFile(
    join(cluster.nodes.a.root, file.split(DOC_NODE_ROOT).join('')),
    'utf8',
  );
  const dir = join(cluster.nodes[node].root, 'apiserver');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const target = join(dir, file.replaceAll('/', '_'));
  await writeFile(target, cluster.toNode(text, node), { mode: 0o600 });
  return target;
}

/** Deploys FILE (written on node a) on every API server, one at a time, traffic flowing throughout. */
export async function rollingDeploy(runner: Runner, file: string): Promise<void> {
  const { cluster, traffic } = runner;
  for (const node of NODES) {
    const target = await placeConfig(cluster, file, node);
    await traffic.pause(node);
    const started = Date.now();
    await cluster.startApiserver(node, target);
    traffic.resume(node);
    runner.log(`[${node}] kube-apiserver restarted with ${file} (${Date.now() - started} ms)`);
    // Each server reads what the other writes, in this mixed state, before anything else changes.
    const c = traffic.counts().crossReads;
    await traffic.waitForCrossReads('a', c.a + 2);
    await traffic.waitForCrossReads('b', c.b + 2);
  }
}

/** The `atrest_keyring_info` series of every plugin (fingerprint and active key id hash). */
export async function keyringInfo(cluster: Cluster): Promise<Record<NodeName, string>> {
  const out = {} as Record<NodeName, string>;
  for (const node of NODES) {
    const line = (await cluster.pluginMetrics(node))
      .split('\n')
      .find((l) => l.startsWith('atrest_keyring_info{'));
    assert.ok(line !== undefined, `atrest_keyring_info on node ${node}`);
    out[node] = line;
  }
  return out;
}

/**
 * Waits until every API server writes with `keyID`: probes a write through each, reads its key_id from
 * etcd, and asks the server's /readyz/kms-providers meanwhile (a check older than 20 s makes it call
 * Status, which is when it notices a new key id).
 */
export async function waitForWriteKeyID(
  runner: Runner,
  keyID: string,
  nodes: readonly NodeName[] = NODES,
): Promise<void> {
  const { cluster } = runner;
  for (const node of nodes) {
    const n = cluster.nodes[node];
    const deadline = Date.now() + 180_000;
    for (let i = 0; ; i++) {
      const name = `probe-${node}-${Date.now()}-${i}`;
      const res = await n.api('POST', '/api/v1/namespaces/ha-probe/secrets', {
        metadata: { name },
        data: { v: Buffer.from('probe').toString('base64') },
      });
      assert.equal(res.status, 201, res.body);
      const stored = decodeStored(
        cluster.etcdctl(['get', `/registry/secrets/ha-probe/${name}`, '-w', 'json']),
      );
      if (stored[0]?.keyID === keyID) break;
      assert.ok(
        Date.now() < deadline,
        `kube-apiserver ${node} still writes with ${stored[0]?.keyID}`,
      );
      await n.api('GET', '/readyz/kms-providers').catch(() => undefined);
      await new Promise((r) => setTimeout(r, 1000));
    }
    // What the docs tell operators to look at: the API server's own metric shows the key id hash it
    // writes with, the same "sha256:<hex>" the plugins export.
    const metrics = (await n.api('GET', '/metrics')).body.split('\n');
    const hash = keyIDHash(keyID);
    const line = metrics.find(
      (l) =>
        l.startsWith('apiserver_envelope_encryption_key_id_hash_last_timestamp_seconds{') &&
        l.includes(`key_id_hash="${hash}"`) &&
        l.includes('transformation_type="to_storage"'),
    );
    assert.ok(line !== undefined, `kube-apiserver ${node} /metrics shows no to_storage ${hash}`);
    runner.log(`[${node}] kube-apiserver writes with key id ${keyID} (${line.split(' ')[0]})`);
  }
}

export async function runSteps(
  runner: Runner,
  steps: readonly DocStep[],
  docs: string,
): Promise<void> {
  const { cluster } = runner;
  for (const step of steps) {
    switch (step.kind) {
      case 'run':
        for (const node of step.on === 'a' ? (['a'] as const) : NODES) {
          for (const c of step.commands) await runCommand(runner, node, c, docs);
        }
        break;
      case 'deploy':
        await rollingDeploy(runner, step.file);
        break;
      case 'copy': {
        const rel = step.path.split(DOC_NODE_ROOT).join('');
        for (const node of NODES.filter((n) => n !== 'a')) {
          const to = join(cluster.nodes[node].root, rel);
          await copyFile(join(cluster.nodes.a.root, rel), to);
          await chmod(to, 0o600);
        }
        runner.log(`copied ${step.path} from node a to every other node`);
        break;
      }
      case 'start-plugins':
        for (const node of NODES) await cluster.startPlugin(node);
        runner.log('atrest serve running on every node');
        break;
      case 'reload':
        for (const node of NODES) {
          assert.equal(await cluster.reloadPlugin(node), 'ok', `reload on node ${node}`);
        }
        runner.log('every plugin reloaded (SIGHUP)');
        break;
      case 'same-fingerprint': {
        const info = await keyringInfo(cluster);
        assert.equal(info.b, info.a, `${docs}:${step.line}: nodes report different keyrings`);
        runner.log(`every plugin reports ${info.a}`);
        break;
      }
      case 'wait-key-id': {
        const keyring = JSON.parse(
          await readFile(join(cluster.nodes.a.root, 'keyring.json'), 'utf8'),
        ) as {
          active: string;
        };
        await waitForWriteKeyID(runner, keyring.active);
        break;
      }
    }
  }
}
