// The pure parts of the "does every kube-apiserver write with the current key_id" check: parsing
// kube-apiserver's envelope metrics and the verdict per server. The check against a real
// kube-apiserver is in test/api/key-rotation.test.ts.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { judgeKeyUse, parseKeyIdMetrics } from '../../src/api/apiserver-key-id.js';

const hash = (id: string): string => `sha256:${createHash('sha256').update(id).digest('hex')}`;
const API = 'sha256:3c607df3b2bf22c9d9f01d5314b4bbf411c48ef43ff44ff29b1d55b41367c795';

function exposition(lines: [string, Record<string, string>, number][]): string {
  return [
    '# HELP apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds [ALPHA] The last time in seconds when a keyID was returned by the Status RPC call.',
    '# TYPE apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds gauge',
    ...lines.map(([name, labels, v]) => `${name}{${Object.entries(labels).map(([k, x]) => `${k}="${x}"`).join(',')}} ${v}`),
    'apiserver_request_total{code="200"} 5',
    '',
  ].join('\n');
}
const STATUS = 'apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds';
const USE = 'apiserver_envelope_encryption_key_id_hash_last_timestamp_seconds';

test('a server whose newest Status answer carries the current key_id is ready', () => {
  const m = parseKeyIdMetrics(exposition([
    [STATUS, { apiserver_id_hash: API, key_id_hash: hash('old'), provider_name: 'atrest' }, 1.7e9],
    [STATUS, { apiserver_id_hash: API, key_id_hash: hash('new'), provider_name: 'atrest' }, 1.7e9 + 60],
    [USE, { apiserver_id_hash: API, key_id_hash: hash('old'), provider_name: 'atrest', transformation_type: 'to_storage' }, 1.7e9 + 30],
  ]));
  assert.equal(m.status.length, 2);
  assert.equal(m.use.length, 1);
  const v = judgeKeyUse('https://a:6443', m, { provider: 'atrest', keyID: 'new' });
  assert.equal(v.ok, true, v.problem);
  assert.equal(v.apiserverIdHash, API);
});

test('a server that last saw the old key_id from Status is not ready, and the message says how to fix it', () => {
  const m = parseKeyIdMetrics(exposition([
    [STATUS, { apiserver_id_hash: API, key_id_hash: hash('old'), provider_name: 'atrest' }, 1.7e9 + 60],
    [STATUS, { apiserver_id_hash: API, key_id_hash: hash('new'), provider_name: 'atrest' }, 1.7e9],
  ]));
  const v = judgeKeyUse('https://a:6443', m, { provider: 'atrest', keyID: 'new' });
  assert.equal(v.ok, false);
  assert.match(v.problem!, /still writes with the old key/);
  assert.match(v.problem!, /wait, or restart it/);
});

test('a write with an older key_id after the current one was seen is not ready', () => {
  const m = parseKeyIdMetrics(exposition([
    [STATUS, { apiserver_id_hash: API, key_id_hash: hash('new'), provider_name: 'atrest' }, 1.7e9],
    [USE, { apiserver_id_hash: API, key_id_hash: hash('old'), provider_name: 'atrest', transformation_type: 'to_storage' }, 1.7e9 + 5],
    [USE, { apiserver_id_hash: API, key_id_hash: hash('old'), provider_name: 'atrest', transformation_type: 'from_storage' }, 1.7e9 + 9],
  ]));
  const v = judgeKeyUse('https://a:6443', m, { provider: 'atrest', keyID: 'new' });
  assert.equal(v.ok, false);
  assert.match(v.problem!, /wrote with another key_id/);
});

test('a server that never polled this provider (another config, another provider name) is not ready', () => {
  const m = parseKeyIdMetrics(exposition([
    [STATUS, { apiserver_id_hash: API, key_id_hash: hash('new'), provider_name: 'other' }, 1.7e9],
  ]));
  const v = judgeKeyUse('https://a:6443', m, { provider: 'atrest', keyID: 'new' });
  assert.equal(v.ok, false);
  assert.match(v.problem!, /no Status answer from kms provider "atrest"/);
});

test('the identity leases renewed within a minute of the newest count the running API servers', async () => {
  const { freshApiServerHosts } = await import('../../src/api/apiserver-key-id.js');
  const lease = (host: string, renewTime: string) => ({
    metadata: { name: `apiserver-${host}`, labels: { 'apiserver.kubernetes.io/identity': 'kube-apiserver', 'kubernetes.io/hostname': host } },
    spec: { renewTime },
  });
  assert.deepEqual(
    freshApiServerHosts({
      items: [
        lease('cp-1', '2026-11-30T10:00:00.000000Z'),
        lease('cp-2', '2026-11-30T09:59:51.500000Z'),
        lease('cp-3', '2026-11-30T09:40:00.000000Z'), // a server that stopped 20 minutes ago
      ],
    }),
    ['cp-1', 'cp-2'],
  );
  assert.deepEqual(freshApiServerHosts({ items: [] }), []);
});
