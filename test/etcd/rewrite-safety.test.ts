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
import { EtcdClient, prefixRangeEnd, type CompareAndPutItem } from '../../src/etcd/client.js';
import { createPolicyResolver } from '../../src/etcd/policy.js';
import { rewrite, hashConfig, type RewriteOptions, type RewriteStore } from '../../src/etcd/rewrite.js';
import { MAX_TXN_BYTES, txnBytesOf } from '../../src/etcd/txn-batch.js';
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


/** The real client, recording each transaction rewrite sends (keys, estimated bytes, outcome). */
function recordingStore(client: EtcdClient): RewriteStore & { readonly txns: { keys: string[]; bytes: number; batch: boolean; succeeded: boolean }[] } {
  const txns: { keys: string[]; bytes: number; batch: boolean; succeeded: boolean }[] = [];
  return {
    txns,
    pages: (start, end, options) => client.pages(start, end, options),
    // Recorded in the order they are sent (transactions in flight together may finish in any order).
    async compareAndPut(key, value, modRevision) {
      const txn = { keys: [Buffer.from(key).toString()], bytes: txnBytesOf(key, value), batch: false, succeeded: false };
      txns.push(txn);
      const res = await client.compareAndPut(key, value, modRevision);
      txn.succeeded = res.succeeded;
      return res;
    },
    async compareAndPutBatch(items: readonly CompareAndPutItem[]) {
      const bytes = items.reduce((n, i) => n + txnBytesOf(i.key, i.value), 0);
      const txn = { keys: items.map((i) => Buffer.from(i.key).toString()), bytes, batch: true, succeeded: false };
      txns.push(txn);
      const res = await client.compareAndPutBatch(items);
      txn.succeeded = res.succeeded;
      return res;
    },
  };
}

function rewriteOptions(store: RewriteStore, extra: Partial<RewriteOptions> = {}): RewriteOptions {
  const config = parseEncryptionConfiguration(CONFIG, 'encryption.yaml');
  const built = buildTransformers(config);
  return {
    store,
    selection: createSelection({ etcdPrefix: '/registry', config, resources: ['secrets'] }),
    policies: createPolicyResolver(config, '/registry', { transformerFor: (gr) => built.transformerFor(gr) }),
    configHash: hashConfig(Buffer.from(CONFIG)),
    etcdPrefix: '/registry/',
    ...extra,
  };
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

  test('a batch where one key changed meanwhile writes nothing, and its keys are redone one by one', async () => {
    const expected = await seedOld(client, 'batch-changed', 10);
    const store = recordingStore(client);
    const changed = '/registry/secrets/batch-changed/s0003';
    let changedOnce = false;
    const report = await rewrite(rewriteOptions(store, {
      beforeWrite: async (k) => {
        if (k.toString() !== changed || changedOnce) return;
        changedOnce = true;
        // what a kube-apiserver that has not reloaded its configuration writes: the old provider again
        const plain = encodeSecret('batch-changed', 's3', { v: 'updated-meanwhile' });
        await client.put(k, await oldWriter.transformToStorage(plain, ctx(changed)));
        expected.set(changed, plain);
      },
    }));
    const mine = store.txns.filter((t) => t.keys.some((k) => k.includes('/batch-changed/')));
    assert.deepEqual(mine[0], { keys: [...expected.keys()], bytes: mine[0]!.bytes, batch: true, succeeded: false });
    // then one single-key transaction each, in key order; each succeeds (the changed key after its re-read)
    assert.deepEqual(mine.slice(1).map((t) => [t.keys, t.batch, t.succeeded]), [...expected.keys()].map((k) => [[k], false, true]));
    assert.equal(report.counts.conflicts, 1);
    assert.equal(report.counts.rewritten, 10);
    assert.equal(report.converged, true);
    await assertConverged(client, 'batch-changed', expected);
    // the failed batch wrote nothing: each key was written once by the rewrite (etcd counts versions)
    for (const key of expected.keys()) {
      const kv = (await client.get(enc(key)))!;
      assert.equal(kv.version, key === changed ? 3 : 2, `${key}: seeded, (updated,) rewritten once`);
    }
  });

  test('a key deleted while its batch is in flight stays deleted; the rest of the batch is rewritten', async () => {
    const expected = await seedOld(client, 'batch-deleted', 10);
    const store = recordingStore(client);
    const deleted = '/registry/secrets/batch-deleted/s0005';
    const report = await rewrite(rewriteOptions(store, {
      beforeWrite: async (k) => {
        if (k.toString() === deleted) await client.delete(k);
      },
    }));
    expected.delete(deleted);
    const mine = store.txns.filter((t) => t.keys.some((k) => k.includes('/batch-deleted/')));
    assert.equal(mine[0]!.batch, true);
    assert.equal(mine[0]!.succeeded, false);
    assert.equal(mine.length, 1 + 9, 'after the failed batch, one transaction per key still there');
    assert.ok(mine.slice(1).every((t) => !t.keys.includes(deleted)));
    assert.equal(report.counts.deleted, 1);
    assert.equal(report.counts.conflicts, 1);
    assert.equal(report.counts.rewritten, 9);
    assert.equal(report.converged, true);
    assert.equal(await client.get(enc(deleted)), undefined, 'the deleted key was not written again');
    await assertConverged(client, 'batch-deleted', expected);
  });

  test('batches are limited by bytes: large values share a transaction only within the budget, the largest goes alone', async () => {
    const ns = 'batch-bytes';
    const expected = new Map<string, Buffer>();
    // six values of 400 KiB (two fit in the 1 MiB budget, three do not), then one of 1.4 MiB
    const sizes = [...Array.from({ length: 6 }, () => 400 * 1024), 1400 * 1024];
    for (const [i, size] of sizes.entries()) {
      const key = `/registry/secrets/${ns}/s${i}`;
      const plain = encodeSecret(ns, `s${i}`, { blob: 'x'.repeat(size) });
      expected.set(key, plain);
      await client.put(enc(key), await oldWriter.transformToStorage(plain, ctx(key)));
    }
    const store = recordingStore(client);
    const report = await rewrite(rewriteOptions(store));
    // in key order: transactions of different chunks are in flight together, in no fixed order
    const mine = store.txns.filter((t) => t.keys.some((k) => k.includes(`/${ns}/`))).sort((a, b) => a.keys[0]!.localeCompare(b.keys[0]!));
    assert.deepEqual(mine.map((t) => [t.keys.length, t.succeeded]), [[2, true], [2, true], [2, true], [1, true]]);
    assert.ok(mine.every((t) => t.keys.length === 1 || t.bytes <= MAX_TXN_BYTES), 'every batch within the byte budget');
    assert.ok(mine[3]!.bytes > MAX_TXN_BYTES, 'the largest value is written on its own');
    assert.equal(report.counts.rewritten, 7);
    assert.equal(report.converged, true);
    await assertConverged(client, ns, expected);
  });

  test('the verification scan still decrypts a value overwritten after its verified transaction', async () => {
    const ns = 'after-verify';
    const expected = await seedOld(client, ns, 20);
    const tampered = `/registry/secrets/${ns}/s0007`;
    let verifying = false;
    let overwritten = false;
    // The store: once the verification scan starts, a "current-looking" value (the aesgcm/new prefix,
    // garbage after it) replaces one key the rewrite had written and verified.
    const store: RewriteStore = {
      ...recordingStore(client),
      pages: (start, end, options) => {
        const inner = client.pages(start, end, options);
        return (async function* () {
          if (verifying && !overwritten) {
            overwritten = true;
            await client.put(enc(tampered), Buffer.concat([Buffer.from('k8s:enc:aesgcm:v1:new:'), Buffer.alloc(64, 7)]));
          }
          yield* inner;
        })();
      },
    };
    const report = await rewrite(rewriteOptions(store, {
      onProgress: (p) => {
        if (p.phase === 'verify') verifying = true;
      },
    }));
    assert.equal(overwritten, true);
    assert.equal(report.counts.rewritten, 20);
    assert.equal(report.converged, false, 'a value that does not decrypt is never taken as verified');
    const finding = report.finalScan!.findings.find((f) => f.key === tampered);
    assert.equal(finding?.problem, 'undecryptable');
    assert.equal(report.finalScan!.totals.undecryptable, 1);
    expected.delete(tampered);
    await client.delete(enc(tampered));
    await assertConverged(client, ns, expected);
  });

  test('a concurrent writer hammering keys during a CLI rewrite loses nothing', async () => {
    const expected = await seedOld(client, 'live', 600);
    // Several keys per transaction, so that the writer's updates make whole batches fail and fall back.
    const TXN_KEYS = 4;
    const keys = [...expected.keys()];
    const random = seededRandom(0x5eed_2026);
    const child = spawn(process.execPath, [CLI, 'rewrite', '--encryption-config', configFile, '--endpoints', etcd.endpoint,
      '--resource', 'secrets', '--concurrency', '4', '--rate', '400', '--txn-keys', String(TXN_KEYS), '-o', 'json'],
      { stdio: ['ignore', 'pipe', 'pipe'] });
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
    // Paced by the rewrite's progress, not by time: after every ROUND_REWRITES transactions of the
    // rewrite (etcd revisions not ours, TXN_KEYS keys each at most), the rewrite is paused (SIGSTOP:
    // alive, mid-flight, reads possibly taken) and we update ROUND_UPDATES keys, then let it go on.
    const ROUND_REWRITES = 20 / TXN_KEYS;
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
    // The rewrite writes at least 600 - writes keys, at most 20 (ROUND_REWRITES transactions of TXN_KEYS)
    // per round: with 5 updates a round that is at least 20 rounds (a few transactions may land while
    // paused) whatever the machine's speed; half of that is asserted.
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
