// Provider and key changes on a control plane of two kube-apiservers sharing one etcd, each node with
// its own `atrest serve` and keyring copy (cluster.ts), while a client creates Secrets through each
// server and reads them through the other (traffic.ts). Runbooks 2 and 3 and the KMS key rotation are
// taken from docs/operations.md and run as written (doc-steps.ts, doc-runner.ts): they lose no read on
// either server. The orders the docs warn against are run too and fail the way the docs say.
// `npm test` runs this as the "ha" suite; ATREST_HA_KEEP=1 keeps the work dir (logs, configs).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startCluster, NODES, type Cluster } from './cluster.js';
import { parseDocSteps, type DocStep } from './doc-steps.js';
import {
  keyringInfo,
  placeConfig,
  runSteps,
  waitForWriteKeyID,
  type Runner,
} from './doc-runner.js';
import { startTraffic, TRAFFIC_NAMESPACE, type Traffic } from './traffic.js';
import { decodeStored, storedSummary } from './stored.js';

const DOCS = join(import.meta.dirname, '..', '..', '..', 'docs', 'operations.md');
const SECRETS = '/registry/secrets/';

function section(sections: Map<string, DocStep[]>, name: string): DocStep[] {
  const steps = sections.get(name);
  assert.ok(steps !== undefined, `docs/operations.md has no e2e:section ${name}`);
  return steps;
}

/** How every Secret the traffic wrote (and the seeds) is stored now: "prefix [keyID]" -> count. */
function storedNow(cluster: Cluster): Record<string, number> {
  return storedSummary(
    decodeStored(
      cluster.etcdctl(['get', '--prefix', `${SECRETS}${TRAFFIC_NAMESPACE}/`, '-w', 'json']),
    ),
  );
}

/** No read failed on either server since the last reset, and each server read the other's writes. */
function assertNoLostRead(runner: Runner, what: string): void {
  const c = runner.traffic.counts();
  runner.log(
    `${what}: creates a=${c.creates.a} b=${c.creates.b}, reads of the other server's writes ` +
      `a=${c.crossReads.a} b=${c.crossReads.b}, lists a=${c.lists.a} b=${c.lists.b}, failures ${c.failures.length}`,
  );
  assert.deepEqual(c.failures, [], `${what}: failed calls`);
  for (const n of NODES) assert.ok(c.crossReads[n] > 0, `${what}: node ${n} read nothing`);
}

async function activeKey(cluster: Cluster): Promise<string> {
  const doc = JSON.parse(await readFile(join(cluster.nodes.a.root, 'keyring.json'), 'utf8')) as {
    active: string;
  };
  return doc.active;
}

test('provider and key changes on two API servers sharing one etcd, as docs/operations.md runs them', async (t) => {
  const sections = parseDocSteps(DOCS);
  const cluster = await startCluster();
  let traffic: Traffic | undefined;
  t.after(async () => {
    await traffic?.stop().catch(() => undefined);
    await cluster.stop();
  });
  const started = Date.now();
  const log = (line: string): void =>
    t.diagnostic(`[${((Date.now() - started) / 1000).toFixed(0)}s] ${line}`);
  const runner = (): Runner => ({ cluster, traffic: traffic!, log });

  // The starting point of runbook 2: both servers on runbook 1's aescbc configuration.
  await runSteps(
    { cluster, traffic: undefined as unknown as Traffic, log },
    section(sections, 'runbook-1-config'),
    'docs/operations.md',
  );
  await Promise.all(
    NODES.map(async (n) =>
      cluster.startApiserver(n, await placeConfig(cluster, 'enc-aescbc.yaml', n)),
    ),
  );
  for (const ns of [TRAFFIC_NAMESPACE, 'ha-probe', 'ha-demo']) {
    const res = await cluster.nodes.a.api('POST', '/api/v1/namespaces', { metadata: { name: ns } });
    assert.equal(res.status, 201, res.body);
  }
  traffic = startTraffic(cluster);
  await traffic.waitForCrossReads('a', 2);
  await traffic.waitForCrossReads('b', 2);
  log(`both API servers up with enc-aescbc.yaml (${Date.now() - started} ms)`);

  await t.test(
    'runbook 2 (aescbc key1 -> key2) in phases loses no read on either server',
    async () => {
      traffic!.resetCounts();
      await runSteps(runner(), section(sections, 'runbook-2'), 'docs/operations.md');
      assertNoLostRead(runner(), 'runbook 2');
      assert.deepEqual(Object.keys(storedNow(cluster)), ['k8s:enc:aescbc:v1:key2:']);
    },
  );

  await t.test('runbook 3 plugins: every node serves the same keyring', async () => {
    await runSteps(runner(), section(sections, 'runbook-3-plugin'), 'docs/operations.md');
    await runSteps(runner(), section(sections, 'runbook-3-target'), 'docs/operations.md');
  });

  await t.test(
    'the direct switch the docs warn about: kms first on server A only -> "no matching prefix found" on B',
    async () => {
      // The single-deploy order runbook 3 used to give: kms first, aescbc kept second, on one server
      // while the other still runs the aescbc-only configuration. config stage refuses that switch.
      const direct = 'stage-kms/2-write.yaml';
      await runSteps(
        runner(),
        [
          {
            kind: 'run',
            on: 'a',
            commands: [
              {
                text: `atrest config stage --from enc-key2.yaml --to ${direct}; echo "exit $?"`,
                shown: ['direct switch from enc-key2.yaml to 2-write.yaml: NOT SAFE', 'exit 3'],
                line: 0,
              },
            ],
          },
        ],
        'direct switch (test)',
      );
      // Traffic would write kms values B cannot read; it pauses while the wrong config is in place.
      await traffic!.pause('a');
      await traffic!.pause('b');
      await cluster.startApiserver('a', await placeConfig(cluster, direct, 'a'));
      const created = await cluster.nodes.a.api('POST', '/api/v1/namespaces/ha-demo/secrets', {
        metadata: { name: 'direct' },
        data: { v: Buffer.from('x').toString('base64') },
      });
      assert.equal(created.status, 201, created.body);
      const get = await cluster.nodes.b.api('GET', '/api/v1/namespaces/ha-demo/secrets/direct');
      const list = await cluster.nodes.b.api('GET', '/api/v1/namespaces/ha-demo/secrets');
      log(`B: GET ${get.status} ${get.body.slice(0, 220)}`);
      assert.equal(get.status, 500);
      assert.match(get.body, /no matching prefix found/);
      assert.equal(list.status, 500, 'one unreadable Secret fails the whole LIST');
      assert.match(list.body, /no matching prefix found/);
      // Undo: the demo's value goes (straight from etcd: B cannot read it, so cannot delete it either),
      // then A returns to the configuration in force.
      cluster.etcdctl(['del', `${SECRETS}ha-demo/direct`]);
      await cluster.startApiserver(
        'a',
        join(cluster.nodes.a.root, 'apiserver', 'stage-key2_3-final.yaml'),
      );
      traffic!.resume('a');
      traffic!.resume('b');
    },
  );

  await t.test(
    'runbook 3 (aescbc -> kms v2) in phases loses no read on either server',
    async () => {
      traffic!.resetCounts();
      await runSteps(runner(), section(sections, 'runbook-3-phases'), 'docs/operations.md');
      assertNoLostRead(runner(), 'runbook 3');
      const key = await activeKey(cluster);
      assert.deepEqual(Object.keys(storedNow(cluster)), [`k8s:enc:kms:v2:atrest: ${key}`]);
    },
  );

  await t.test(
    'KMS key rotation in two steps (add, activate) loses no read; then the old key is retired',
    async () => {
      traffic!.resetCounts();
      const oldKey = await activeKey(cluster);
      await runSteps(runner(), section(sections, 'kms-rotation'), 'docs/operations.md');
      const newKey = await activeKey(cluster);
      assert.notEqual(newKey, oldKey);
      assertNoLostRead(runner(), 'KMS key rotation');
      // The rewrite converged with both servers on the new key: nothing is left under the old one
      // (traffic written meanwhile is under the new key too).
      assert.deepEqual(Object.keys(storedNow(cluster)), [`k8s:enc:kms:v2:atrest: ${newKey}`]);
      // Retire the old key the same way (one node, copy, reload everywhere): still no lost read.
      traffic!.resetCounts();
      await runSteps(
        runner(),
        [
          {
            kind: 'run',
            on: 'a',
            commands: [
              {
                text: `atrest keys retire ${oldKey} --keyring /tmp/rb/keyring.json --force`,
                shown: [],
                line: 0,
              },
            ],
          },
          { kind: 'copy', path: '/tmp/rb/keyring.json', line: 0 },
          { kind: 'reload', line: 0 },
          { kind: 'same-fingerprint', line: 0 },
        ],
        'retire (test)',
      );
      await traffic!.waitForCrossReads('a', 4);
      await traffic!.waitForCrossReads('b', 4);
      assertNoLostRead(runner(), 'after retiring the old key');
    },
  );

  await t.test(
    'the naive order the docs warn about: keys rotate on node A only -> reads fail on B',
    async () => {
      traffic!.resetCounts();
      const before = await keyringInfo(cluster);
      const r = await runSteps(
        runner(),
        [
          {
            kind: 'run',
            on: 'a',
            commands: [
              { text: 'atrest keys rotate --keyring /tmp/rb/keyring.json', shown: [], line: 0 },
            ],
          },
        ],
        'rotate (test)',
      ).then(() => cluster.reloadPlugin('a'));
      assert.equal(r, 'ok');
      const rotated = await activeKey(cluster);
      const after = await keyringInfo(cluster);
      assert.notEqual(after.a, before.a, 'node A reports another keyring than node B now');
      assert.equal(after.b, before.b);
      // Only server A picks the new key id up (its plugin reports it); B's plugin does not hold the key.
      await traffic!.pause('b');
      await waitForWriteKeyID({ cluster, traffic: traffic!, log }, rotated, ['a']);
      const created = await cluster.nodes.a.api(
        'POST',
        `/api/v1/namespaces/${TRAFFIC_NAMESPACE}/secrets`,
        {
          metadata: { name: 'naive' },
          data: { v: Buffer.from('written with a key node B lacks').toString('base64') },
        },
      );
      assert.equal(created.status, 201, created.body);
      const get = await cluster.nodes.b.api(
        'GET',
        `/api/v1/namespaces/${TRAFFIC_NAMESPACE}/secrets/naive`,
      );
      log(`B: GET ${get.status} ${get.body.slice(0, 300)}`);
      assert.equal(get.status, 500);
      assert.match(get.body, /failed to decrypt DEK/);
      assert.match(get.body, new RegExp(`key ${rotated} is not in the keyring`));
      const list = await cluster.nodes.b.api(
        'GET',
        `/api/v1/namespaces/${TRAFFIC_NAMESPACE}/secrets`,
      );
      assert.equal(list.status, 500, 'the whole LIST fails on B');
      // And the client traffic sees it: B fails to read what A now writes.
      traffic!.resume('b');
      await traffic!.waitFor((c) => c.failures.some((f) => f.node === 'b'));
      const failures = traffic!.counts().failures;
      assert.ok(
        failures.every((f) => f.node === 'b' && /failed to decrypt DEK/.test(f.message)),
        JSON.stringify(failures.slice(0, 3)),
      );
      log(
        `traffic: ${failures.length} failed call(s) on B, e.g. ${failures[0]!.op} ${failures[0]!.name}: ${failures[0]!.message.slice(0, 160)}`,
      );
    },
  );
});
