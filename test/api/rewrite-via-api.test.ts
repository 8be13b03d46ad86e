// runRewriteViaApi against a real kube-apiserver + etcd (aescbc as the target provider, so no plugin
// is involved): stale values get re-encrypted, fresh ones are left alone, expired lists restart,
// interrupted runs resume, dry runs persist nothing, concurrent kubectl writers cause no failures.

import type { KubeConfig } from '@kubernetes/client-node';
import { loadKubeConfig } from '../../src/cli/kubeconfig.js';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { runRewriteViaApi, type RewriteViaApiOptions } from '../../src/api/rewrite-via-api.js';
import { silentLogger } from '../../src/logger.js';
import { AtrestError } from '../../src/errors.js';
import {
  CACHE_BIN,
  startControlPlane,
  storedPrefixes,
  type ControlPlane,
} from './control-plane.js';

const NAMESPACES = ['rw-a', 'rw-b', 'rw-c'];
const PER_NAMESPACE = 40;
const TOTAL = NAMESPACES.length * PER_NAMESPACE;
const PREFIX = '/registry/secrets/rw-';

let cp: ControlPlane;
let kubeConfig: KubeConfig;
let configs: { aescbc: string; key2First: string; key1First: string };

function writeConfig(file: string, keys: readonly [string, string][]): string {
  const path = join(cp.dir, file);
  writeFileSync(
    path,
    [
      'apiVersion: apiserver.config.k8s.io/v1',
      'kind: EncryptionConfiguration',
      'resources:',
      '  - resources: [secrets]',
      '    providers:',
      '      - aescbc:',
      '          keys:',
      ...keys.flatMap(([name, secret]) => [
        `            - name: ${name}`,
        `              secret: ${secret}`,
      ]),
      '      - identity: {}',
      '',
    ].join('\n'),
  );
  return path;
}

function options(extra: Partial<RewriteViaApiOptions> = {}): RewriteViaApiOptions {
  return {
    kubeConfig,
    resources: ['secrets'],
    concurrency: 4,
    pageSize: 25,
    dryRun: false,
    logger: silentLogger,
    ...extra,
  };
}

/** How the test Secrets are stored: prefix -> count. */
function storedCounts(): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const head of storedPrefixes(cp, PREFIX).values()) {
    const kind = head.startsWith('k8s:enc:aescbc:v1:')
      ? head.slice(0, head.indexOf(':', 'k8s:enc:aescbc:v1:'.length) + 1)
      : head.startsWith('k8s\u0000')
        ? 'plaintext'
        : 'other';
    counts[kind] = (counts[kind] ?? 0) + 1;
  }
  return counts;
}

function createSecrets(): void {
  const items = NAMESPACES.flatMap((ns) =>
    Array.from({ length: PER_NAMESPACE }, (_, i) => ({
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: `s-${String(i).padStart(3, '0')}`, namespace: ns },
      data: { k: Buffer.from(`value-${ns}-${i}`).toString('base64') },
    })),
  );
  cp.kubectl(['create', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items }));
}

before(async () => {
  cp = await startControlPlane();
  kubeConfig = await loadKubeConfig(cp.kubeconfig, undefined);
  const key1 = randomBytes(32).toString('base64');
  const key2 = randomBytes(32).toString('base64');
  configs = {
    aescbc: writeConfig('aescbc.yaml', [['key1', key1]]),
    key2First: writeConfig('key2-first.yaml', [
      ['key2', key2],
      ['key1', key1],
    ]),
    key1First: writeConfig('key1-first.yaml', [
      ['key1', key1],
      ['key2', key2],
    ]),
  };
  await cp.restartApiserver();
  for (const ns of NAMESPACES) cp.kubectl(['create', 'namespace', ns]);
  createSecrets();
  assert.deepEqual(storedCounts(), { plaintext: TOTAL });
  await cp.restartApiserver(configs.aescbc);
});

after(async () => {
  await cp?.stop();
});

describe('runRewriteViaApi', () => {
  test('a dry run patches nothing into etcd', async () => {
    const summary = await runRewriteViaApi(options({ dryRun: true }));
    assert.equal(summary.listed, TOTAL);
    assert.equal(summary.patched, TOTAL);
    assert.equal(summary.rewritten, 0);
    assert.deepEqual(summary.failed, []);
    assert.equal(summary.dryRun, true);
    assert.deepEqual(storedCounts(), { plaintext: TOTAL });
  });

  test('re-encrypts every stale Secret with the write provider, page by page', async () => {
    const pages: number[] = [];
    const summary = await runRewriteViaApi(
      options({ onProgress: (p) => p.event === 'page' && pages.push(p.listed) }),
    );
    assert.equal(summary.listed, TOTAL);
    assert.equal(summary.patched, TOTAL);
    assert.equal(summary.rewritten, TOTAL);
    assert.deepEqual(summary.failed, []);
    assert.equal(pages.length, Math.ceil(TOTAL / 25));
    assert.deepEqual(storedCounts(), { 'k8s:enc:aescbc:v1:key1:': TOTAL });
  });

  test('a second run finds nothing stale and writes nothing', async () => {
    const before = cp.etcdctl(['get', '--prefix', PREFIX, '-w', 'json']);
    const summary = await runRewriteViaApi(options());
    assert.equal(summary.patched, TOTAL);
    assert.equal(summary.rewritten, 0);
    const revisions = (json: string): string[] =>
      (JSON.parse(json) as { kvs: { mod_revision: number }[] }).kvs.map((kv) =>
        String(kv.mod_revision),
      );
    assert.deepEqual(
      revisions(cp.etcdctl(['get', '--prefix', PREFIX, '-w', 'json'])),
      revisions(before),
    );
  });

  test('restarts the list when its continue token expired and patches each object once', async () => {
    await cp.restartApiserver(configs.key2First);
    let compacted = false;
    const summary = await runRewriteViaApi(
      options({
        onProgress: (p) => {
          if (p.event !== 'page' || compacted) return;
          compacted = true;
          // one more revision, then compact everything before it: the page's continue token is gone
          cp.etcdctl(['put', '/atrest-test/bump', String(Date.now())]);
          const rev = (
            JSON.parse(cp.etcdctl(['endpoint', 'status', '-w', 'json'])) as {
              Status: { header: { revision: number } };
            }[]
          )[0]!.Status.header.revision;
          cp.etcdctl(['compact', String(rev)]);
        },
      }),
    );
    assert.ok(summary.restarts >= 1, `restarts = ${summary.restarts}`);
    assert.equal(summary.patched, TOTAL);
    assert.equal(summary.skipped, 25 * summary.restarts);
    assert.equal(summary.rewritten, TOTAL);
    assert.deepEqual(summary.failed, []);
    assert.deepEqual(storedCounts(), { 'k8s:enc:aescbc:v1:key2:': TOTAL });
  });

  test('an interrupted run resumes after the last completed object', async () => {
    await cp.restartApiserver(configs.key1First);
    const resumeFile = join(cp.dir, 'resume.json');
    const controller = new AbortController();
    let objects = 0;
    const first = await runRewriteViaApi(
      options({
        resumeFile,
        concurrency: 3,
        signal: controller.signal,
        onProgress: (p) => {
          if (p.event === 'object' && ++objects === 50) controller.abort();
        },
      }),
    );
    assert.equal(first.interrupted, true);
    assert.ok(first.patched >= 50 && first.patched < TOTAL, `first run patched ${first.patched}`);
    const checkpoint = JSON.parse(readFileSync(resumeFile, 'utf8')) as {
      current: { resource: string; after: string };
    };
    assert.equal(checkpoint.current.resource, 'secrets');
    assert.match(checkpoint.current.after, /^rw-[a-c]\/s-\d{3}$/);

    const second = await runRewriteViaApi(options({ resumeFile }));
    assert.equal(second.interrupted, false);
    assert.deepEqual(second.failed, []);
    assert.ok(second.skipped >= 50, `second run skipped ${second.skipped}`);
    assert.equal(second.skipped + second.patched, TOTAL);
    assert.equal(first.rewritten + second.rewritten, TOTAL);
    assert.equal(existsSync(resumeFile), false, 'a finished run removes its resume file');
    assert.deepEqual(storedCounts(), { 'k8s:enc:aescbc:v1:key1:': TOTAL });
  });

  test('refuses a resume file written for other resources', async () => {
    const resumeFile = join(cp.dir, 'other.json');
    writeFileSync(
      resumeFile,
      JSON.stringify({
        kind: 'atrest-rewrite-via-api-checkpoint',
        version: 1,
        resources: ['configmaps'],
        completed: [],
      }),
    );
    await assert.rejects(runRewriteViaApi(options({ resumeFile })), (err: unknown) => {
      assert.ok(err instanceof AtrestError);
      assert.equal(err.code, 'ERR_CHECKPOINT_INVALID');
      return true;
    });
  });

  test('counts an object deleted between the list and its patch as gone, not failed', async () => {
    cp.kubectl(['create', 'secret', 'generic', 'zz-doomed', '-n', 'rw-c', '--from-literal=k=v']);
    let deleted = false;
    const summary = await runRewriteViaApi(
      options({
        pageSize: 500,
        concurrency: 1,
        onProgress: (p) => {
          if (p.event === 'page' && !deleted) {
            deleted = true;
            cp.kubectl(['delete', 'secret', 'zz-doomed', '-n', 'rw-c']);
          }
        },
      }),
    );
    assert.equal(summary.gone, 1);
    assert.equal(summary.patched, TOTAL);
    assert.deepEqual(summary.failed, []);
  });

  test('concurrent kubectl writers make no patch fail', async () => {
    await cp.restartApiserver(configs.key2First);
    const writers: ChildProcess[] = [0, 1].map((w) =>
      spawn(
        'bash',
        [
          '-c',
          `n=0; while :; do
             $KUBECTL annotate secret "s-$(printf %03d $(( n % ${PER_NAMESPACE} )))" -n rw-a "w${w}=$n" --overwrite >/dev/null 2>&1
             $KUBECTL create secret generic "w${w}-$n" -n rw-b --from-literal=k=$n >/dev/null 2>&1
             [ $n -ge 2 ] && $KUBECTL delete secret "w${w}-$(( n - 2 ))" -n rw-b --wait=false >/dev/null 2>&1
             n=$(( n + 1 ))
             echo "$n"
           done`,
        ],
        {
          stdio: ['ignore', 'pipe', 'ignore'],
          env: {
            ...process.env,
            KUBECTL: `${join(CACHE_BIN, 'kubectl')} --kubeconfig=${cp.kubeconfig}`,
          },
        },
      ),
    );
    // Each writer prints a line after each round of writes; the pipe is drained all along.
    const wroteOnce = writers.map(
      (w) =>
        new Promise<void>((resolve, reject) => {
          w.stdout!.on('data', () => resolve());
          w.once('exit', (code) => reject(new Error(`a writer exited (${code}) before writing`)));
        }),
    );
    try {
      // The writers are going (each has written) before the first list.
      await Promise.all(wroteOnce);
      const summary = await runRewriteViaApi(options({ concurrency: 6, pageSize: 20 }));
      assert.deepEqual(summary.failed, []);
      assert.ok(summary.patched >= TOTAL, `patched ${summary.patched}`);
    } finally {
      await Promise.all(
        writers.map(
          (w) =>
            new Promise<void>((resolve) => {
              w.once('exit', () => resolve());
              w.kill('SIGTERM');
            }),
        ),
      );
    }
    const counts = storedCounts();
    assert.equal(counts['k8s:enc:aescbc:v1:key1:'] ?? 0, 0, 'no Secret left under the old key');
    assert.equal(counts['plaintext'] ?? 0, 0);
  });

  test('rejects a resource the API server does not serve', async () => {
    await assert.rejects(
      runRewriteViaApi(options({ resources: ['pandas.example.com'] })),
      (err: unknown) => {
        assert.ok(err instanceof AtrestError);
        assert.equal(err.code, 'ERR_API');
        return true;
      },
    );
  });
});
