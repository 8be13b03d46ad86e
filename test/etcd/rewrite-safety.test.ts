// The rewrite's safety properties on a real etcd: concurrent writers lose nothing, a kill -9 in the
// middle leaves only whole values and --resume completes the job.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseEncryptionConfiguration } from '../../src/config/parse.js';
import { buildTransformers } from '../../src/config/build.js';
import { EtcdClient, prefixRangeEnd } from '../../src/etcd/client.js';
import { createPolicyResolver } from '../../src/etcd/policy.js';
import { rewrite, hashConfig } from '../../src/etcd/rewrite.js';
import { createSelection } from '../../src/etcd/selection.js';
import { describeStoredValue } from '../../src/transformers/describe.js';
import { startEtcd, type RunningEtcd } from '../helpers/etcd.js';
import { CLI, enc, encodeSecret, keyedWriter, keysYaml, newKey, runCli, writeFile } from './fixtures.js';

const oldKey = newKey('old');
const newKeyGcm = newKey('new');
const CONFIG = `apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - aesgcm: {keys: [${keysYaml([newKeyGcm])}]}
      - aescbc: {keys: [${keysYaml([oldKey])}]}
`;
const oldWriter = keyedWriter('aescbc', oldKey);
const newWriter = keyedWriter('aesgcm', newKeyGcm);
const ctx = (key: string) => ({ authenticatedData: enc(key) });

/** A seeded generator in [0, 1) (mulberry32): the same keys are picked on every run. */
function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

async function seedOld(client: EtcdClient, ns: string, n: number): Promise<Map<string, Buffer>> {
  const expected = new Map<string, Buffer>();
  const batch: Promise<unknown>[] = [];
  for (let i = 0; i < n; i++) {
    const key = `/registry/secrets/${ns}/s${String(i).padStart(4, '0')}`;
    const plain = encodeSecret(ns, `s${i}`, { v: `original-${i}` });
    expected.set(key, plain);
    batch.push(oldWriter.transformToStorage(plain, ctx(key)).then((v) => client.put(enc(key), v)));
    if (batch.length >= 32) await Promise.all(batch.splice(0));
  }
  await Promise.all(batch);
  return expected;
}

/** Every key under the namespace decrypts (with the new config) to the expected plaintext and is current. */
async function assertConverged(client: EtcdClient, ns: string, expected: Map<string, Buffer>): Promise<void> {
  const prefix = enc(`/registry/secrets/${ns}/`);
  let n = 0;
  for await (const page of client.pages(prefix, prefixRangeEnd(prefix))) {
    for (const kv of page) {
      const key = kv.key.toString();
      const info = describeStoredValue(kv.value);
      assert.equal(`${info.format}/${info.keyName}`, 'aesgcm/new', `${key} is written by the current key`);
      const back = await newWriter.transformFromStorage(kv.value, ctx(key));
      assert.deepEqual(back.data, expected.get(key), `${key} keeps the latest plaintext`);
      n++;
    }
  }
  assert.equal(n, expected.size);
}

describe('rewrite safety on a real etcd', () => {
  let etcd: RunningEtcd;
  let client: EtcdClient;
  let dir: string;
  let configFile: string;

  before(async () => {
    etcd = await startEtcd();
    client = new EtcdClient({ endpoints: [etcd.endpoint] });
    dir = mkdtempSync(join(tmpdir(), 'atrest-rewrite-safety-'));
    configFile = writeFile(dir, 'encryption.yaml', CONFIG);
  });
  after(async () => {
    await client?.close();
    await etcd?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('a value written between our read and our write is never overwritten (injected conflicts)', async () => {
    const expected = await seedOld(client, 'hook', 200);
    const config = parseEncryptionConfiguration(CONFIG, 'encryption.yaml');
    const built = buildTransformers(config);
    const policies = createPolicyResolver(config, '/registry', { transformerFor: (gr) => built.transformerFor(gr) });
    const hooked = new Set<string>();
    let i = 0;
    const report = await rewrite({
      store: client,
      selection: createSelection({ etcdPrefix: '/registry', config, resources: ['secrets'] }),
      policies,
      configHash: hashConfig(Buffer.from(CONFIG)),
      etcdPrefix: '/registry/',
      concurrency: 4,
      // an "API server" updates every 5th key right after we read it: half with the new provider,
      // half with the old one (a server that has not reloaded its config yet)
      beforeWrite: async (k) => {
        const key = k.toString();
        if (!key.includes('/hook/') || hooked.has(key) || i++ % 5 !== 0) return;
        hooked.add(key);
        const plain = encodeSecret('hook', key, { v: 'updated-by-api-server' });
        const writer = hooked.size % 2 === 0 ? newWriter : oldWriter;
        await client.put(k, await writer.transformToStorage(plain, ctx(key)));
        expected.set(key, plain);
      },
    });
    assert.equal(hooked.size, 40);
    assert.equal(report.counts.conflicts, 40);
    assert.equal(report.counts.failed, 0);
    // the keys updated with the old provider were re-read and rewritten; the others were current
    assert.equal(report.counts.rewritten, 180);
    assert.equal(report.converged, true);
    await assertConverged(client, 'hook', expected);
  });

  test('a concurrent writer hammering keys during a CLI rewrite loses nothing', async () => {
    const expected = await seedOld(client, 'live', 600);
    const keys = [...expected.keys()];
    const random = seededRandom(0x5eed_2026);
    const child = spawn(process.execPath, [CLI, 'rewrite', '--encryption-config', configFile, '--endpoints', etcd.endpoint,
      '--resource', 'secrets', '--concurrency', '4', '--rate', '400', '-o', 'json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    let running = true;
    const exited = new Promise<number | null>((resolve) =>
      child.on('close', (code) => {
        running = false;
        resolve(code);
      }),
    );
    // What a kube-apiserver with the new configuration does: update objects at random, meanwhile.
    // Paced by the rewrite's progress, not by time: after every ROUND_REWRITES writes of the rewrite
    // (etcd revisions not ours), the rewrite is paused (SIGSTOP: alive, mid-flight, reads possibly
    // taken) and we update ROUND_UPDATES keys, then let it go on.
    const ROUND_REWRITES = 20;
    const ROUND_UPDATES = 5;
    let writes = 0;
    let ours = (await client.status()).revision;
    try {
      while (running) {
        if ((await client.status()).revision < ours + ROUND_REWRITES) {
          await new Promise((r) => setTimeout(r, 5));
          continue;
        }
        if (!running || !child.kill('SIGSTOP')) break;
        try {
          for (let u = 0; u < ROUND_UPDATES; u++) {
            const key = keys[Math.floor(random() * keys.length)]!;
            const plain = encodeSecret('live', key, { v: `concurrent-${writes}` });
            ours = await client.put(enc(key), await newWriter.transformToStorage(plain, ctx(key)));
            expected.set(key, plain);
            writes++;
          }
        } finally {
          child.kill('SIGCONT');
        }
      }
    } finally {
      if (running) child.kill('SIGCONT');
    }
    const code = await exited;
    assert.equal(code, 0, stderr);
    const report = JSON.parse(stdout);
    assert.equal(report.converged, true);
    // The rewrite writes at least 600 - writes keys, ROUND_REWRITES per round: with 5 updates a round
    // that is at least 20 rounds (a few rewrites may land while paused) whatever the machine's speed;
    // half of that is asserted.
    assert.ok(writes >= 50, `the writer made ${writes} writes during the rewrite`);
    await assertConverged(client, 'live', expected);
  });

  test('kill -9 in the middle leaves whole values only, and --resume completes', async () => {
    const expected = await seedOld(client, 'crash', 500);
    const checkpoint = join(dir, 'rewrite.checkpoint');
    const args = ['rewrite', '--encryption-config', configFile, '--endpoints', etcd.endpoint,
      '--resource', 'secrets', '--concurrency', '2', '--rate', '60', '--resume', checkpoint, '-o', 'json'];
    const child = spawn(process.execPath, [CLI, ...args], { stdio: 'ignore' });
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_c, s) => resolve(s)));
    // wait for the first checkpoint (after one page), then kill without any chance to clean up
    const deadline = Date.now() + 60_000;
    while (!existsSync(checkpoint) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.ok(existsSync(checkpoint), 'a checkpoint was written');
    child.kill('SIGKILL');
    assert.equal(await exited, 'SIGKILL');
    const saved = JSON.parse(readFileSync(checkpoint, 'utf8'));
    assert.ok(saved.counts.rewritten > 0);
    assert.notEqual(saved.ranges[0].lastKey, '');

    // in between: every value is whole (old or new format, decrypts), some still old
    const config = parseEncryptionConfiguration(CONFIG, 'encryption.yaml');
    const built = buildTransformers(config);
    const t = built.transformerFor({ group: '', resource: 'secrets' });
    let stale = 0;
    for (const [key, plain] of expected) {
      if (!key.includes('/crash/')) continue;
      const kv = await client.get(enc(key));
      const back = await t.transformFromStorage(kv!.value, ctx(key));
      assert.deepEqual(back.data, plain);
      if (back.stale) stale++;
    }
    assert.ok(stale > 0 && stale < 500, `${stale} values still old after the kill`);

    const r = await runCli(args);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.equal(report.resumed, true);
    assert.equal(report.converged, true);
    // counts carry over from the killed run: the keys it wrote after its last checkpoint are current now
    assert.equal(report.counts.rewritten + report.counts.alreadyCurrent >= 500, true);
    // two scopes, kept apart: this run's writes match this run's preflight; all runs add the checkpoint's
    assert.equal(report.countsThisRun.rewritten, report.preflight.toRewrite);
    assert.equal(report.countsThisRun.alreadyCurrent, report.preflight.current);
    assert.equal(report.counts.rewritten, saved.counts.rewritten + report.countsThisRun.rewritten);
    assert.equal(existsSync(checkpoint), false, 'the checkpoint is removed once the rewrite is complete');
    await assertConverged(client, 'crash', expected);
  });

  test('a checkpoint from another configuration is refused', async () => {
    const checkpoint = writeFile(dir, 'foreign.checkpoint', JSON.stringify({
      version: 1, configHash: 'sha256:00', etcdPrefix: '/registry/', selection: 'secrets',
      ranges: [{ start: '00', lastKey: '', complete: false }], counts: {}, startedAt: '', updatedAt: '',
    }));
    const r = await runCli(['rewrite', '--encryption-config', configFile, '--endpoints', etcd.endpoint,
      '--resource', 'secrets', '--resume', checkpoint]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /was written for another encryption configuration/);
  });
});
