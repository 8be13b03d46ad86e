// parseEncryptionConfiguration / loadEncryptionConfiguration: both kinds, YAML and JSON, defaults, strict
// decoding, every problem at once with its path, secrets REDACTED. Verdict parity with kube-apiserver is in
// test/parity/config-parity.test.ts.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  loadEncryptionConfiguration,
  parseEncryptionConfiguration,
  parseGoDuration,
  providerType,
} from '../../src/config/index.js';
import { AtrestError, ConfigInvalidError } from '../../src/errors.js';

const K32 = Buffer.alloc(32, 9).toString('base64');
const HEAD = 'apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n';

function problemsOf(text: string, options = {}): Map<string, string> {
  try {
    parseEncryptionConfiguration(text, 'test.yaml', options);
  } catch (err) {
    assert.ok(err instanceof ConfigInvalidError, String(err));
    assert.equal(err.code, 'ERR_CONFIG_INVALID');
    return new Map(err.problems.map((p) => [p.path, p.message]));
  }
  assert.fail('expected the configuration to be rejected');
}

describe('parseEncryptionConfiguration', () => {
  it('reads the current kind in YAML with every provider type, in order', () => {
    const c = parseEncryptionConfiguration(
      `${HEAD}resources:
  - resources: [secrets, configmaps]
    providers:
      - aesgcm: {keys: [{name: g1, secret: ${K32}}]}
      - aescbc: {keys: [{name: c1, secret: ${K32}}]}
      - secretbox: {keys: [{name: s1, secret: ${K32}}]}
      - kms: {apiVersion: v2, name: plugin, endpoint: "unix:///run/kms.sock", timeout: 1m30s}
      - identity: {}
`,
      'x.yaml',
    );
    assert.equal(c.apiVersion, 'apiserver.config.k8s.io/v1');
    assert.equal(c.kind, 'EncryptionConfiguration');
    assert.deepEqual(c.resources[0]!.resources, ['secrets', 'configmaps']);
    assert.deepEqual(c.resources[0]!.providers.map(providerType), ['aesgcm', 'aescbc', 'secretbox', 'kms', 'identity']);
    const kms = c.resources[0]!.providers[3]!;
    assert.ok('kms' in kms);
    assert.deepEqual({ ...kms.kms }, {
      apiVersion: 'v2',
      name: 'plugin',
      endpoint: 'unix:///run/kms.sock',
      timeout: 90_000,
      timeoutText: '1m30s',
    });
  });

  it('reads the legacy apiVersion v1 kind EncryptionConfig from JSON', () => {
    const c = parseEncryptionConfiguration(
      JSON.stringify({ apiVersion: 'v1', kind: 'EncryptionConfig', resources: [{ resources: ['secrets'], providers: [{ identity: {} }] }] }),
      'x.json',
    );
    assert.equal(c.kind, 'EncryptionConfig');
    assert.deepEqual(c.resources[0]!.providers, [{ identity: {} }]);
  });

  it('applies the upstream kms defaults: apiVersion v1, cachesize 1000 (v1 only), timeout 3s', () => {
    const c = parseEncryptionConfiguration(
      `${HEAD}resources:
  - resources: [secrets]
    providers:
      - kms: {name: old, endpoint: "unix:///a.sock"}
      - kms: {apiVersion: v2, name: new, endpoint: "unix:///b.sock"}
`,
      'x.yaml',
    );
    const [v1, v2] = c.resources[0]!.providers;
    assert.ok(v1 && 'kms' in v1 && v2 && 'kms' in v2);
    assert.equal(v1.kms.apiVersion, 'v1');
    assert.equal(v1.kms.cachesize, 1000);
    assert.equal(v1.kms.timeout, 3000);
    assert.equal(v1.kms.timeoutText, '3s');
    assert.equal(v2.kms.cachesize, undefined);
    assert.equal(v2.kms.timeout, 3000);
  });

  it('reports every problem at once, each with its field path', () => {
    const problems = problemsOf(`${HEAD}resources:
  - resources: [Secrets, '*']
    providers:
      - aescbc:
          keys:
            - name: k
              secret: ${Buffer.alloc(5).toString('base64')}
            - secret: ${K32}
      - kms: {apiVersion: v2, name: "a:b", endpoint: "tcp://x", timeout: 0s, cachesize: 5}
      - identity: {}
        secretbox: {keys: []}
  - resources: [configmaps]
`);
    for (const path of [
      'resources[0].resources[0]',
      'resources[0].resources[1]',
      'resources[0].providers[0].aescbc.keys[0].secret',
      'resources[0].providers[1].kms.name',
      'resources[0].providers[1].kms.endpoint',
      'resources[0].providers[1].kms.timeout',
      'resources[0].providers[1].kms.cachesize',
      'resources[0].providers[2]',
      'resources[0].providers[2].secretbox.keys',
      'resources[1].providers',
      'resources[0].providers[0].aescbc.keys[1].name',
    ]) {
      assert.ok(problems.has(path), `missing ${path} in ${JSON.stringify([...problems])}`);
    }
  });

  it('prints secrets as REDACTED and never echoes them', () => {
    const bad = 'c2VjcmV0IGlzIHNlY3VyZSwgb3IgaXMgaXQ/Cg==';
    try {
      parseEncryptionConfiguration(
        `${HEAD}resources:\n  - resources: [secrets]\n    providers:\n      - secretbox: {keys: [{name: k, secret: "${bad}"}, {name: j, secret: "%%%${bad}"}, {name: i, secret: 12345}]}\n`,
        'x.yaml',
      );
      assert.fail('should be rejected');
    } catch (err) {
      assert.ok(err instanceof ConfigInvalidError);
      assert.match(err.message, /REDACTED/);
      assert.doesNotMatch(err.message, /c2VjcmV0/);
      assert.doesNotMatch(err.message, /12345/);
      assert.equal(err.problems.length, 3);
    }
  });

  it('keeps key material out of JSON.stringify of a parsed configuration', () => {
    const c = parseEncryptionConfiguration(
      `${HEAD}resources:\n  - resources: [secrets]\n    providers:\n      - aesgcm: {keys: [{name: k, secret: "${K32}"}]}\n`,
      'x.yaml',
    );
    const p = c.resources[0]!.providers[0]!;
    assert.ok('aesgcm' in p);
    assert.equal(p.aesgcm.keys[0]!.secret, K32);
    assert.doesNotMatch(JSON.stringify(c), new RegExp(K32.slice(0, 16)));
  });

  it('rejects unknown and duplicate fields, naming them', () => {
    const problems = problemsOf(`${HEAD}metadata: {}
resources:
  - resources: [secrets]
    resources: [configmaps]
    providers:
      - kms: {name: a, endpoint: "unix:///a.sock", pandas: 1}
`);
    assert.equal(problems.get('metadata'), 'unknown field');
    assert.equal(problems.get('resources[0].resources'), 'duplicate field');
    assert.equal(problems.get('resources[0].providers[0].kms.pandas'), 'unknown field');
  });

  it('rejects an empty file, a comment-only file, syntax errors and several documents', () => {
    for (const text of ['', '   \n', '# nothing\n', 'resources: [\n', `${HEAD}---\n${HEAD}`]) {
      const problems = problemsOf(text);
      assert.ok(problems.size > 0, JSON.stringify(text));
    }
  });

  it('rejects mismatched apiVersion/kind pairs', () => {
    for (const head of [
      'apiVersion: v1\nkind: EncryptionConfiguration\n',
      'apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfig\n',
      'kind: EncryptionConfiguration\n',
    ]) {
      const problems = problemsOf(`${head}resources:\n  - resources: [secrets]\n    providers: [{identity: {}}]\n`);
      assert.ok(problems.has('kind') || problems.has('apiVersion'), head);
    }
  });

  it('rejects a resource masked by an earlier wildcard rule and names the rule', () => {
    const problems = problemsOf(`${HEAD}resources:
  - resources: ['*.apps']
    providers: [{identity: {}}]
  - resources: [deployments.apps]
    providers: [{identity: {}}]
`);
    assert.match(problems.get('resources[1].resources[0]') ?? '', /masked by the earlier rule "\*\.apps"/);
  });

  it('makes kms v1 names unique only with automatic reload, v2 names always', () => {
    const twoV1 = `${HEAD}resources:\n  - resources: [secrets]\n    providers:\n      - kms: {name: a, endpoint: "unix:///a"}\n      - kms: {name: a, endpoint: "unix:///a"}\n`;
    assert.doesNotThrow(() => parseEncryptionConfiguration(twoV1, 'x'));
    assert.ok(problemsOf(twoV1, { reload: true }).has('resources[0].providers[1].kms.name'));
    const v1ThenV2 = twoV1.replace(/(kms: \{)(name: a[^\n]*\n)$/, '$1apiVersion: v2, $2');
    assert.ok(problemsOf(v1ThenV2).has('resources[0].providers[1].kms.name'));
  });

  it('refuses kms v1 when the KMSv1 gate is off, and allows it by default', () => {
    const text = `${HEAD}resources:\n  - resources: [secrets]\n    providers: [{kms: {name: a, endpoint: "unix:///a"}}]\n`;
    assert.doesNotThrow(() => parseEncryptionConfiguration(text, 'x'));
    assert.ok(problemsOf(text, { kmsV1: false }).has('resources[0].providers[0].kms.apiVersion'));
  });

  it('reads YAML 1.1 as Kubernetes does: `yes` is a boolean, so not a key name', () => {
    const problems = problemsOf(`${HEAD}resources:\n  - resources: [secrets]\n    providers: [{aescbc: {keys: [{name: yes, secret: "${K32}"}]}}]\n`);
    assert.match(problems.get('resources[0].providers[0].aescbc.keys[0].name') ?? '', /string/);
  });
});

describe('loadEncryptionConfiguration', () => {
  it('reads a file and reports an unreadable one as ERR_CONFIG_UNREADABLE', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'atrest-config-'));
    try {
      const file = join(dir, 'enc.yaml');
      writeFileSync(file, `${HEAD}resources:\n  - resources: [secrets]\n    providers: [{identity: {}}]\n`);
      const c = await loadEncryptionConfiguration(file);
      assert.equal(c.resources.length, 1);
      await assert.rejects(loadEncryptionConfiguration(join(dir, 'missing.yaml')), (err: unknown) => {
        assert.ok(err instanceof AtrestError);
        assert.equal(err.code, 'ERR_CONFIG_UNREADABLE');
        return true;
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('parseGoDuration', () => {
  it('reads Go duration syntax and refuses what Go refuses', () => {
    const ok: [string, number][] = [
      ['3s', 3e9],
      ['1m30s', 90e9],
      ['500ms', 500e6],
      ['1.5h', 5400e9],
      ['-1s', -1e9],
      ['0', 0],
      ['.5s', 0.5e9],
      ['1h2m3s4ms5us6ns', 3723004005006],
      ['2µs', 2000],
    ];
    for (const [text, ns] of ok) assert.equal(parseGoDuration(text), ns, text);
    for (const text of ['', '3', 's', '1d', '1.s.', '--1s', '1 s', 'ms']) {
      assert.equal(parseGoDuration(text), undefined, text);
    }
  });
});
