// Generated configurations (fast-check): random combinations of resource names, providers, keys and kms
// fields, valid and invalid, each judged by atrest and by kube-apiserver's loader (Go oracle). The
// verdicts must agree. Complements the hand-written table in config-parity.test.ts.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { stringify } from 'yaml';
import { parseEncryptionConfiguration } from '../../src/config/index.js';
import { createOraclePool, type Oracle } from './oracle.js';

const b64 = (n: number) => Buffer.alloc(n, 5).toString('base64');

/** Mostly valid values, sometimes an invalid one: most generated files then have zero or one problem. */
function mostly<T>(valid: readonly T[], invalid: readonly T[]): fc.Arbitrary<T> {
  return fc.oneof({ arbitrary: fc.constantFrom(...valid), weight: 12 }, { arbitrary: fc.constantFrom(...invalid), weight: 1 });
}

const resourceName = fc.oneof(
  {
    arbitrary: fc.constantFrom('secrets', 'configmaps', 'deployments.apps', 'pandas.awesome.bears.example', 'events', 'jobs.batch', 'leases.coordination.k8s.io', ''),
    weight: 10,
  },
  { arbitrary: fc.constantFrom('*.', '*.*', '*.apps', '*.awesome.bears.example'), weight: 3 },
  {
    arbitrary: fc.constantFrom('Secrets', '*', '*.events.k8s.io', 'ingresses.extensions', 'secrets.*', 'serviceipallocations', 'apiserveripinfo'),
    weight: 1,
  },
);

const keyEntry = fc.record(
  {
    name: mostly(['k1', 'k2', 'with:colon'], ['']),
    secret: mostly([b64(16), b64(24), b64(32)], [b64(31), b64(33), b64(0), 'not base64!', b64(32).replace(/=+$/, '')]),
  },
  { requiredKeys: [] },
);

const kmsEntry = fc.record(
  {
    apiVersion: mostly(['v1', 'v2'], ['v3', '']),
    name: mostly(['a', 'b', 'c', 'd', 'e', 'f', 'g', 'a:b'], ['']),
    endpoint: mostly(['unix:///tmp/atrest-fuzz.sock', 'unix:///@abstract', 'UNIX:///tmp/x'], ['tcp://127.0.0.1:1', '/tmp/x.sock', 'unix://h:p/x', '']),
    timeout: mostly(['3s', '100ms', '1m30s'], ['0s', '-1s', '3', '1d']),
    cachesize: mostly([1000, -1, 1], [0]),
  },
  { requiredKeys: ['name', 'endpoint'] },
);

const keys = fc.array(keyEntry, { minLength: 1, maxLength: 3 });
const provider = fc.oneof(
  { arbitrary: fc.constant({ identity: {} }), weight: 3 },
  { arbitrary: fc.record({ aescbc: fc.record({ keys }) }), weight: 3 },
  { arbitrary: fc.record({ aesgcm: fc.record({ keys }) }), weight: 3 },
  { arbitrary: fc.record({ secretbox: fc.record({ keys }) }), weight: 2 },
  { arbitrary: fc.record({ kms: kmsEntry }), weight: 4 },
  { arbitrary: fc.constant({}), weight: 1 },
  { arbitrary: fc.constant({ aesgcm: { keys: [] } }), weight: 1 },
  { arbitrary: fc.constant({ identity: {}, aescbc: { keys: [{ name: 'k', secret: b64(32) }] } }), weight: 1 },
);

const config = fc.record({
  legacy: fc.boolean(),
  syntax: fc.constantFrom('json', 'yaml-flow', 'yaml-block'),
  reload: fc.boolean(),
  kmsV1: fc.oneof({ arbitrary: fc.constant(true), weight: 4 }, { arbitrary: fc.constant(false), weight: 1 }),
  resources: fc.array(
    fc.record({
      resources: fc.uniqueArray(resourceName, { minLength: 1, maxLength: 2 }),
      providers: fc.array(provider, { minLength: 1, maxLength: 3 }),
    }),
    { minLength: 1, maxLength: 3 },
  ),
});

type Generated = typeof config extends fc.Arbitrary<infer T> ? T : never;

function render(c: Generated): string {
  const doc = {
    apiVersion: c.legacy ? 'v1' : 'apiserver.config.k8s.io/v1',
    kind: c.legacy ? 'EncryptionConfig' : 'EncryptionConfiguration',
    resources: c.resources,
  };
  if (c.syntax === 'json') return JSON.stringify(doc, null, 1);
  if (c.syntax === 'yaml-block') return stringify(doc);
  // YAML via JSON-in-flow style is valid YAML; quote every string so YAML 1.1 typing cannot differ.
  return `---\n${JSON.stringify(doc, null, 2)}\n`;
}

describe('generated EncryptionConfigurations get the same verdict from atrest and kube-apiserver', () => {
  let dir: string;
  const oracles = createOraclePool();
  const oracle = (kmsV1: boolean): Oracle => oracles.get(kmsV1);
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'atrest-config-fuzz-'));
  });
  after(async () => {
    await oracles.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('agrees on 500 random configurations, and both verdicts occur', async (t) => {
    const seen = { accept: 0, reject: 0 };
    let n = 0;
    await fc.assert(
      fc.asyncProperty(config, async (c) => {
        const text = render(c);
        const file = join(dir, `fuzz-${n++}.${c.syntax === 'json' ? 'json' : 'yaml'}`);
        writeFileSync(file, text);
        const upstream = await oracle(c.kmsV1).load(file, { reload: c.reload });
        let ours = 'accept';
        let why = '';
        try {
          parseEncryptionConfiguration(text, file, { reload: c.reload, kmsV1: c.kmsV1 });
        } catch (err) {
          ours = 'reject';
          why = err instanceof Error ? err.message : String(err);
        }
        const theirs = upstream.ok ? 'accept' : 'reject';
        seen[theirs]++;
        assert.equal(ours, theirs, `kube-apiserver: ${upstream.error ?? 'accepted'}\natrest: ${why || 'accepted'}\n${text}`);
      }),
      { numRuns: 500 },
    );
    t.diagnostic(`verdicts: ${JSON.stringify(seen)}`);
    assert.ok(seen.accept > 0 && seen.reject > 0, JSON.stringify(seen));
  });
});
