// Config parity: every configuration below gets the same accept/reject verdict from atrest's parser and
// from kube-apiserver's own loader (k8s.io/apiserver LoadEncryptionConfig, via the Go oracle). Each row
// also states the verdict we expect, so a broken oracle (rejecting everything) cannot make it pass.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseEncryptionConfiguration } from '../../src/config/index.js';
import { ConfigInvalidError } from '../../src/errors.js';
import { createOraclePool, type Oracle } from './oracle.js';

const b64 = (n: number, fill = 7): string => Buffer.alloc(n, fill).toString('base64');
const K16 = b64(16);
const K24 = b64(24);
const K32 = b64(32);

const HEAD = 'apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n';
const LEGACY_HEAD = 'apiVersion: v1\nkind: EncryptionConfig\n';

/** One resource entry for `secrets` with the given provider YAML (indented as a list item body). */
function secretsWith(providers: string): string {
  return `${HEAD}resources:\n  - resources: [secrets]\n    providers:\n${providers}`;
}
const aescbc = (secret: string, name = 'key1'): string =>
  `      - aescbc:\n          keys:\n            - name: ${name}\n              secret: ${secret}\n`;
const kms = (fields: string): string => `      - kms: {${fields}}\n`;
const SOCK = 'unix:///tmp/atrest-parity-nonexistent.sock';

interface Row {
  readonly name: string;
  readonly text: string;
  readonly expect: 'accept' | 'reject';
  readonly reload?: boolean;
  readonly kmsV1?: boolean;
  readonly ext?: 'yaml' | 'json';
}

const ROWS: readonly Row[] = [
  // providers and keys
  { name: 'aescbc with a 32-byte key', text: secretsWith(aescbc(K32)), expect: 'accept' },
  { name: 'aescbc with a 16-byte key', text: secretsWith(aescbc(K16)), expect: 'accept' },
  { name: 'aescbc with a 24-byte key', text: secretsWith(aescbc(K24)), expect: 'accept' },
  { name: 'aescbc with a 31-byte key', text: secretsWith(aescbc(b64(31))), expect: 'reject' },
  {
    name: 'aesgcm with 16, 24 and 32-byte keys',
    text: secretsWith(
      `      - aesgcm:\n          keys:\n            - {name: a, secret: ${K16}}\n            - {name: b, secret: ${K24}}\n            - {name: c, secret: ${K32}}\n`,
    ),
    expect: 'accept',
  },
  {
    name: 'aesgcm with a 15-byte key',
    text: secretsWith(`      - aesgcm:\n          keys: [{name: a, secret: ${b64(15)}}]\n`),
    expect: 'reject',
  },
  {
    name: 'secretbox with a 32-byte key',
    text: secretsWith(`      - secretbox:\n          keys: [{name: a, secret: ${K32}}]\n`),
    expect: 'accept',
  },
  {
    name: 'secretbox with a 16-byte key',
    text: secretsWith(`      - secretbox:\n          keys: [{name: a, secret: ${K16}}]\n`),
    expect: 'reject',
  },
  { name: 'a secret that is not base64', text: secretsWith(aescbc('"not*base64*at*all"')), expect: 'reject' },
  { name: 'a secret without its base64 padding', text: secretsWith(aescbc(K32.replace(/=+$/, ''))), expect: 'reject' },
  {
    name: 'a secret split by a newline (Go base64 skips CR/LF)',
    text: secretsWith(aescbc(JSON.stringify(`${K32.slice(0, 20)}\n${K32.slice(20)}`))),
    expect: 'accept',
  },
  {
    name: 'a key without a name',
    text: secretsWith(`      - aescbc:\n          keys: [{secret: ${K32}}]\n`),
    expect: 'reject',
  },
  { name: 'a key without a secret', text: secretsWith(`      - aescbc:\n          keys: [{name: a}]\n`), expect: 'reject' },
  { name: 'an empty key list', text: secretsWith(`      - aescbc:\n          keys: []\n`), expect: 'reject' },
  {
    name: 'a key name YAML 1.1 reads as a boolean',
    text: secretsWith(`      - aescbc:\n          keys: [{name: yes, secret: ${K32}}]\n`),
    expect: 'reject',
  },
  {
    name: 'a key name YAML reads as a number',
    text: secretsWith(`      - aescbc:\n          keys: [{name: 123, secret: ${K32}}]\n`),
    expect: 'reject',
  },
  { name: 'identity only', text: secretsWith('      - identity: {}\n'), expect: 'accept' },
  { name: 'identity with a null value', text: secretsWith('      - identity:\n'), expect: 'reject' },
  { name: 'identity with a field', text: secretsWith('      - identity: {strict: true}\n'), expect: 'reject' },
  {
    name: 'two providers in one element',
    text: secretsWith(`      - identity: {}\n        aescbc:\n          keys: [{name: a, secret: ${K32}}]\n`),
    expect: 'reject',
  },
  { name: 'an empty provider element', text: secretsWith('      - {}\n'), expect: 'reject' },
  { name: 'a provider given as a string', text: secretsWith('      - identity\n'), expect: 'reject' },
  {
    name: 'aescbc then identity then aesgcm (order kept, all valid)',
    text: secretsWith(`${aescbc(K32)}      - identity: {}\n      - aesgcm:\n          keys: [{name: g, secret: ${K32}}]\n`),
    expect: 'accept',
  },
  // null values: Go leaves strings empty and pointers nil, then defaults and validation apply
  { name: 'a null provider element', text: secretsWith('      - null\n'), expect: 'reject' },
  { name: 'a null key', text: secretsWith('      - aescbc:\n          keys: [null]\n'), expect: 'reject' },
  { name: 'kms timeout null (defaulted)', text: secretsWith(kms(`apiVersion: v2, name: a, endpoint: "${SOCK}", timeout: null`)), expect: 'accept' },
  { name: 'kms v1 cachesize null (defaulted)', text: secretsWith(kms(`name: a, endpoint: "${SOCK}", cachesize: null`)), expect: 'accept' },
  { name: 'kms apiVersion null (defaults to v1)', text: secretsWith(kms(`apiVersion: null, name: a, endpoint: "${SOCK}"`)), expect: 'accept' },
  { name: 'a null resources list', text: `${HEAD}resources:\n  - resources: null\n    providers:\n      - identity: {}\n`, expect: 'reject' },
  { name: 'an empty-string resource name', text: `${HEAD}resources:\n  - resources: [secrets, ""]\n    providers:\n      - identity: {}\n`, expect: 'accept' },
  { name: 'a resources entry that is a string', text: `${HEAD}resources:\n  - secrets\n`, expect: 'reject' },
  { name: 'a top-level list', text: '- apiVersion: v1\n  kind: EncryptionConfig\n', expect: 'reject' },
  { name: 'JSON with a trailing comma', ext: 'json', text: '{"apiVersion":"v1","kind":"EncryptionConfig","resources":[{"resources":["secrets"],"providers":[{"identity":{}}],}]}', expect: 'reject' },
  { name: 'a YAML merge key', text: `${HEAD}resources:\n  - resources: [secrets]\n    providers:\n      - kms:\n          <<: {apiVersion: v2, endpoint: "${SOCK}"}\n          name: merged\n`, expect: 'accept' },
  // document kinds and strictness
  {
    name: 'the legacy apiVersion v1 kind EncryptionConfig',
    text: `${LEGACY_HEAD}resources:\n  - resources: [secrets]\n    providers:\n${aescbc(K32)}`,
    expect: 'accept',
  },
  {
    name: 'the real apiVersion with the legacy kind',
    text: `apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfig\nresources:\n  - resources: [secrets]\n    providers:\n      - identity: {}\n`,
    expect: 'reject',
  },
  {
    name: 'the legacy apiVersion with the real kind',
    text: `apiVersion: v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - identity: {}\n`,
    expect: 'reject',
  },
  {
    name: 'a missing kind',
    text: `apiVersion: apiserver.config.k8s.io/v1\nresources:\n  - resources: [secrets]\n    providers:\n      - identity: {}\n`,
    expect: 'reject',
  },
  {
    name: 'an unknown apiVersion',
    text: `apiVersion: apiserver.config.k8s.io/v1beta1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - identity: {}\n`,
    expect: 'reject',
  },
  {
    name: 'an unknown top-level field',
    text: `${HEAD}metadata: {name: x}\nresources:\n  - resources: [secrets]\n    providers:\n      - identity: {}\n`,
    expect: 'reject',
  },
  { name: 'an unknown kms field', text: secretsWith(kms(`name: a, endpoint: "${SOCK}", pandas: 1`)), expect: 'reject' },
  {
    name: 'a key field spelled with a capital (case-sensitive decoding)',
    text: secretsWith(`      - aescbc:\n          keys: [{Name: a, secret: ${K32}}]\n`),
    expect: 'reject',
  },
  {
    name: 'a duplicate YAML field',
    text: `${HEAD}resources:\n  - resources: [secrets]\n    providers:\n      - identity: {}\n    providers:\n      - identity: {}\n`,
    expect: 'reject',
  },
  {
    name: 'YAML anchors and aliases',
    text: `${HEAD}resources:\n  - resources: [secrets]\n    providers: &p\n${aescbc(K32)}  - resources: [configmaps]\n    providers: *p\n`,
    expect: 'accept',
  },
  { name: 'an empty file', text: '', expect: 'reject' },
  { name: 'a file with only a comment', text: '# nothing here\n', expect: 'reject' },
  { name: 'an empty resources list', text: `${HEAD}resources: []\n`, expect: 'reject' },
  {
    name: 'an entry without resources',
    text: `${HEAD}resources:\n  - providers:\n      - identity: {}\n`,
    expect: 'reject',
  },
  { name: 'an entry without providers', text: `${HEAD}resources:\n  - resources: [secrets]\n`, expect: 'reject' },
  // JSON
  {
    name: 'JSON, valid',
    ext: 'json',
    text: JSON.stringify({
      apiVersion: 'apiserver.config.k8s.io/v1',
      kind: 'EncryptionConfiguration',
      resources: [{ resources: ['secrets', 'configmaps'], providers: [{ aesgcm: { keys: [{ name: 'k', secret: K32 }] } }, { identity: {} }] }],
    }),
    expect: 'accept',
  },
  {
    name: 'JSON, the legacy kind',
    ext: 'json',
    text: JSON.stringify({ apiVersion: 'v1', kind: 'EncryptionConfig', resources: [{ resources: ['secrets'], providers: [{ identity: {} }] }] }),
    expect: 'accept',
  },
  {
    name: 'JSON, a duplicate key',
    ext: 'json',
    text: `{"apiVersion":"apiserver.config.k8s.io/v1","kind":"EncryptionConfiguration","resources":[{"resources":["secrets"],"resources":["configmaps"],"providers":[{"identity":{}}]}]}`,
    expect: 'reject',
  },
  {
    name: 'JSON, an unknown field',
    ext: 'json',
    text: JSON.stringify({ apiVersion: 'apiserver.config.k8s.io/v1', kind: 'EncryptionConfiguration', resources: [{ resources: ['secrets'], providers: [{ identity: {} }], extra: 1 }] }),
    expect: 'reject',
  },
  {
    name: 'JSON, cachesize written as 1.0',
    ext: 'json',
    text: `{"apiVersion":"apiserver.config.k8s.io/v1","kind":"EncryptionConfiguration","resources":[{"resources":["secrets"],"providers":[{"kms":{"name":"a","endpoint":"${SOCK}","cachesize":1.0}}]}]}`,
    expect: 'reject',
  },
  // resource names and overlaps
  { name: 'the same resource twice in one list', text: `${HEAD}resources:\n  - resources: [secrets, secrets]\n    providers:\n      - identity: {}\n`, expect: 'reject' },
  { name: "'secrets' and '*.' in one list", text: `${HEAD}resources:\n  - resources: [secrets, '*.']\n    providers:\n      - identity: {}\n`, expect: 'reject' },
  { name: "'*.*' with another resource", text: `${HEAD}resources:\n  - resources: ['*.*', configmaps]\n    providers:\n      - identity: {}\n`, expect: 'reject' },
  { name: "'*.apps' with 'deployments.apps'", text: `${HEAD}resources:\n  - resources: ['*.apps', deployments.apps]\n    providers:\n      - identity: {}\n`, expect: 'reject' },
  { name: "a bare '*'", text: `${HEAD}resources:\n  - resources: ['*']\n    providers:\n      - identity: {}\n`, expect: 'reject' },
  { name: 'a capital letter in a resource', text: `${HEAD}resources:\n  - resources: [Secrets]\n    providers:\n      - identity: {}\n`, expect: 'reject' },
  { name: 'a resource without a REST API', text: `${HEAD}resources:\n  - resources: [serviceipallocations]\n    providers:\n      - identity: {}\n`, expect: 'reject' },
  { name: "the 'events.k8s.io' group", text: `${HEAD}resources:\n  - resources: ['*.events.k8s.io']\n    providers:\n      - identity: {}\n`, expect: 'reject' },
  { name: "the 'extensions' group", text: `${HEAD}resources:\n  - resources: [ingresses.extensions]\n    providers:\n      - identity: {}\n`, expect: 'reject' },
  { name: "a resource across every group ('secrets.*')", text: `${HEAD}resources:\n  - resources: ['secrets.*']\n    providers:\n      - identity: {}\n`, expect: 'reject' },
  {
    name: "custom resources, '*.apps' and '*.' together (different groups)",
    text: `${HEAD}resources:\n  - resources: [pandas.awesome.bears.example, '*.apps', '*.']\n    providers:\n${aescbc(K32)}`,
    expect: 'accept',
  },
  // across entries
  {
    name: "'secrets' after an earlier '*.' is masked",
    text: `${HEAD}resources:\n  - resources: ['*.']\n    providers:\n      - identity: {}\n  - resources: [secrets]\n    providers:\n${aescbc(K32)}`,
    expect: 'reject',
  },
  {
    name: "'deployments.apps' after an earlier '*.*' is masked",
    text: `${HEAD}resources:\n  - resources: ['*.*']\n    providers:\n      - identity: {}\n  - resources: [deployments.apps]\n    providers:\n      - identity: {}\n`,
    expect: 'reject',
  },
  {
    name: "'*.apps' twice in two entries is masked by itself",
    text: `${HEAD}resources:\n  - resources: ['*.apps']\n    providers:\n      - identity: {}\n  - resources: ['*.apps']\n    providers:\n      - identity: {}\n`,
    expect: 'reject',
  },
  {
    name: "'secrets' before '*.' and '*.*' is fine",
    text: `${HEAD}resources:\n  - resources: [secrets]\n    providers:\n${aescbc(K32)}  - resources: ['*.']\n    providers:\n      - identity: {}\n  - resources: ['*.*']\n    providers:\n      - identity: {}\n`,
    expect: 'accept',
  },
  {
    name: 'the same resource in two entries (providers concatenated)',
    text: `${HEAD}resources:\n  - resources: [secrets]\n    providers:\n${aescbc(K32)}  - resources: [secrets]\n    providers:\n      - identity: {}\n`,
    expect: 'accept',
  },
  // kms
  { name: 'kms v2, minimal', text: secretsWith(kms(`apiVersion: v2, name: a, endpoint: "${SOCK}"`)), expect: 'accept' },
  { name: 'kms with no apiVersion (v1, gate on)', text: secretsWith(kms(`name: a, endpoint: "${SOCK}"`)), expect: 'accept' },
  {
    name: 'kms v1 with the KMSv1 gate off',
    text: secretsWith(kms(`apiVersion: v1, name: a, endpoint: "${SOCK}"`)),
    expect: 'reject',
    kmsV1: false,
  },
  {
    name: 'kms v2 with the KMSv1 gate off',
    text: secretsWith(kms(`apiVersion: v2, name: a, endpoint: "${SOCK}"`)),
    expect: 'accept',
    kmsV1: false,
  },
  { name: 'kms v1 cachesize 0', text: secretsWith(kms(`name: a, endpoint: "${SOCK}", cachesize: 0`)), expect: 'reject' },
  { name: 'kms v1 cachesize -1 (cache off)', text: secretsWith(kms(`name: a, endpoint: "${SOCK}", cachesize: -1`)), expect: 'accept' },
  { name: 'kms v1 cachesize as a string', text: secretsWith(kms(`name: a, endpoint: "${SOCK}", cachesize: "100"`)), expect: 'reject' },
  { name: 'kms v1 cachesize beyond int32', text: secretsWith(kms(`name: a, endpoint: "${SOCK}", cachesize: 3000000000`)), expect: 'reject' },
  { name: 'kms v2 with a cachesize', text: secretsWith(kms(`apiVersion: v2, name: a, endpoint: "${SOCK}", cachesize: 10`)), expect: 'reject' },
  { name: 'kms apiVersion v3', text: secretsWith(kms(`apiVersion: v3, name: a, endpoint: "${SOCK}"`)), expect: 'reject' },
  { name: 'kms without a name', text: secretsWith(kms(`apiVersion: v2, endpoint: "${SOCK}"`)), expect: 'reject' },
  { name: "kms v2 name with ':'", text: secretsWith(kms(`apiVersion: v2, name: "a:b", endpoint: "${SOCK}"`)), expect: 'reject' },
  { name: "kms v1 name with ':'", text: secretsWith(kms(`apiVersion: v1, name: "a:b", endpoint: "${SOCK}"`)), expect: 'accept' },
  {
    name: 'two kms v2 providers with one name',
    text: secretsWith(kms(`apiVersion: v2, name: a, endpoint: "${SOCK}"`) + kms(`apiVersion: v2, name: a, endpoint: "${SOCK}"`)),
    expect: 'reject',
  },
  {
    name: 'a kms v2 name equal to an earlier kms v1 name (other entry)',
    text: `${HEAD}resources:\n  - resources: [secrets]\n    providers:\n${kms(`name: a, endpoint: "${SOCK}"`)}  - resources: [configmaps]\n    providers:\n${kms(`apiVersion: v2, name: a, endpoint: "${SOCK}"`)}`,
    expect: 'reject',
  },
  {
    name: 'two kms v1 providers with one name, no reload',
    text: secretsWith(kms(`name: a, endpoint: "${SOCK}"`) + kms(`name: a, endpoint: "${SOCK}"`)),
    expect: 'accept',
  },
  {
    name: 'two kms v1 providers with one name, automatic reload',
    text: secretsWith(kms(`name: a, endpoint: "${SOCK}"`) + kms(`name: a, endpoint: "${SOCK}"`)),
    expect: 'reject',
    reload: true,
  },
  { name: 'kms without an endpoint', text: secretsWith(kms('apiVersion: v2, name: a')), expect: 'reject' },
  { name: 'kms with a tcp endpoint', text: secretsWith(kms('apiVersion: v2, name: a, endpoint: "tcp://127.0.0.1:9000"')), expect: 'reject' },
  { name: 'kms with an upper-case UNIX scheme', text: secretsWith(kms('apiVersion: v2, name: a, endpoint: "UNIX:///tmp/k.sock"')), expect: 'accept' },
  { name: 'kms endpoint with a bad port', text: secretsWith(kms('apiVersion: v2, name: a, endpoint: "unix://host:port/k.sock"')), expect: 'reject' },
  { name: 'kms endpoint with a bad escape', text: secretsWith(kms('apiVersion: v2, name: a, endpoint: "unix:///tmp/%zz.sock"')), expect: 'reject' },
  { name: 'kms endpoint without a scheme', text: secretsWith(kms('apiVersion: v2, name: a, endpoint: "/tmp/k.sock"')), expect: 'reject' },
  { name: 'kms timeout 0s', text: secretsWith(kms(`apiVersion: v2, name: a, endpoint: "${SOCK}", timeout: 0s`)), expect: 'reject' },
  { name: 'kms timeout -1s', text: secretsWith(kms(`apiVersion: v2, name: a, endpoint: "${SOCK}", timeout: -1s`)), expect: 'reject' },
  { name: 'kms timeout 1m30s', text: secretsWith(kms(`apiVersion: v2, name: a, endpoint: "${SOCK}", timeout: 1m30s`)), expect: 'accept' },
  { name: 'kms timeout 500ms', text: secretsWith(kms(`apiVersion: v2, name: a, endpoint: "${SOCK}", timeout: 500ms`)), expect: 'accept' },
  { name: 'kms timeout without a unit', text: secretsWith(kms(`apiVersion: v2, name: a, endpoint: "${SOCK}", timeout: "3"`)), expect: 'reject' },
  { name: 'kms timeout as a number', text: secretsWith(kms(`apiVersion: v2, name: a, endpoint: "${SOCK}", timeout: 3`)), expect: 'reject' },
  {
    name: 'many problems at once',
    text: `${HEAD}resources:\n  - resources: [Secrets, '*']\n    providers:\n${aescbc(b64(5))}${kms('apiVersion: v2, name: "x:y", endpoint: "tcp://a", timeout: 0s')}`,
    expect: 'reject',
  },
];

describe('EncryptionConfiguration parity with kube-apiserver (k8s.io/apiserver LoadEncryptionConfig)', () => {
  let dir: string;
  const oracles = createOraclePool();
  const oracle = (kmsV1: boolean): Oracle => oracles.get(kmsV1);

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'atrest-config-parity-'));
  });
  after(async () => {
    await oracles.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('has at least 40 rows, both verdicts, both kinds and both syntaxes', () => {
    assert.ok(ROWS.length >= 40, `only ${ROWS.length} rows`);
    assert.ok(ROWS.some((r) => r.expect === 'accept') && ROWS.some((r) => r.expect === 'reject'));
    assert.ok(ROWS.some((r) => r.text.includes('kind: EncryptionConfig\n')));
    assert.ok(ROWS.some((r) => r.ext === 'json' && r.expect === 'accept'));
    assert.equal(new Set(ROWS.map((r) => r.name)).size, ROWS.length, 'row names are unique');
  });

  ROWS.forEach((row, i) => {
    it(`gives the upstream verdict (${row.expect}) for ${row.name}`, async () => {
      const file = join(dir, `row-${i}.${row.ext ?? 'yaml'}`);
      writeFileSync(file, row.text);
      const upstream = await oracle(row.kmsV1 ?? true).load(file, { reload: row.reload ?? false });
      let ours: 'accept' | 'reject' = 'accept';
      let ourProblems = '';
      try {
        parseEncryptionConfiguration(row.text, file, { reload: row.reload ?? false, kmsV1: row.kmsV1 ?? true });
      } catch (err) {
        assert.ok(err instanceof ConfigInvalidError, `expected ConfigInvalidError, got ${String(err)}`);
        ours = 'reject';
        ourProblems = err.message;
      }
      const theirs = upstream.ok ? 'accept' : 'reject';
      assert.equal(theirs, row.expect, `kube-apiserver's loader: ${upstream.error ?? 'accepted'}`);
      assert.equal(ours, theirs, `atrest disagrees with kube-apiserver (${upstream.error ?? 'accepted'}): ${ourProblems}`);
    });
  });
});
