// The Prometheus registry's text format, bounded labels, and the health listener's parsing.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRegistry } from '../../src/health/metrics.js';
import { createPluginMetrics, keyIDHash } from '../../src/health/plugin-metrics.js';
import {
  parseHealthListen,
  startHealthServer,
  DEFAULT_HEALTH_LISTEN,
} from '../../src/health/server.js';
import { silentLogger } from '../../src/logger.js';
import { AtrestError } from '../../src/errors.js';

test('counters, gauges and histograms render in the Prometheus text format', () => {
  const r = createRegistry();
  r.counter('x_total', 'Xs.', ['a']).inc({ a: 'q"\\\n' }, 2);
  r.gauge('g', 'G.').set(1.5);
  const h = r.histogram('h_seconds', 'H.', [0.1, 1], ['m']);
  h.observe(0.05, { m: 'A' });
  h.observe(0.5, { m: 'A' });
  h.observe(5, { m: 'A' });
  const text = r.render();
  assert.ok(text.includes('# TYPE x_total counter\nx_total{a="q\\"\\\\\\n"} 2\n'));
  assert.ok(text.includes('g 1.5\n'));
  assert.ok(text.includes('h_seconds_bucket{m="A",le="0.1"} 1\n'));
  assert.ok(text.includes('h_seconds_bucket{m="A",le="1"} 2\n'));
  assert.ok(text.includes('h_seconds_bucket{m="A",le="+Inf"} 3\n'));
  assert.ok(text.includes('h_seconds_sum{m="A"} 5.55\n'));
  assert.ok(text.includes('h_seconds_count{m="A"} 3\n'));
  assert.throws(() => r.counter('y', 'Y.', ['a']).inc({ b: '1' }), TypeError);
});

test('a kept series and the label-set calls count into the same rendered series', () => {
  const r = createRegistry();
  const c = r.counter('c_total', 'C.', ['a']);
  const h = r.histogram('h_seconds', 'H.', [0.1, 1], ['m']);
  const kept = c.series({ a: 'x' });
  const keptH = h.series({ m: 'A' });
  kept.inc();
  c.inc({ a: 'x' }, 2);
  kept.inc(4);
  keptH.observe(0.05);
  h.observe(0.5, { m: 'A' });
  const text = r.render();
  assert.ok(text.includes('c_total{a="x"} 7\n'));
  assert.ok(text.includes('h_seconds_bucket{m="A",le="1"} 2\n'));
  assert.ok(text.includes('h_seconds_count{m="A"} 2\n'));
  const m = createPluginMetrics({ version: '1', backend: 'keyring' });
  for (let i = 0; i < 3; i++) m.recordCall('/v2.KeyManagementService/Encrypt', 'OK', 0.001);
  m.recordCall('/v2.KeyManagementService/Encrypt', 'INVALID_ARGUMENT', 0.001);
  for (let i = 0; i < 2; i++) m.backendOperation('wrap', 'ok', 0.0001);
  const plugin = m.registry.render();
  assert.match(plugin, /atrest_grpc_requests_total\{service="v2\.KeyManagementService",method="Encrypt",code="OK"\} 3\n/);
  assert.match(plugin, /atrest_grpc_requests_total\{service="v2\.KeyManagementService",method="Encrypt",code="INVALID_ARGUMENT"\} 1\n/);
  assert.match(plugin, /atrest_grpc_request_duration_seconds_count\{service="v2\.KeyManagementService",method="Encrypt"\} 4\n/);
  assert.match(plugin, /atrest_backend_operations_total\{backend="keyring",operation="wrap",outcome="ok"\} 2\n/);
});

test('unknown gRPC methods never become label values', () => {
  const m = createPluginMetrics({ version: '1', backend: 'keyring' });
  for (let i = 0; i < 50; i++) m.recordCall(`/evil.Service/M${i}`, 'UNIMPLEMENTED', 0.001);
  m.recordCall('/v2.KeyManagementService/Status', 'OK', 0.001);
  const text = m.registry.render();
  assert.ok(!text.includes('evil'));
  assert.match(
    text,
    /atrest_grpc_requests_total\{service="unknown",method="unknown",code="UNIMPLEMENTED"\} 50/,
  );
  assert.match(
    text,
    /atrest_grpc_requests_total\{service="v2\.KeyManagementService",method="Status",code="OK"\} 1/,
  );
});

test('the active key id appears only as a sha256 hash, one series at a time', () => {
  const m = createPluginMetrics({ version: '1', backend: 'keyring' });
  m.activeKeyID('key-one');
  m.activeKeyID('key-two');
  const text = m.registry.render();
  assert.ok(!text.includes('key-one') && !text.includes('key-two'));
  assert.ok(!text.includes(keyIDHash('key-one')));
  assert.ok(text.includes(`atrest_active_key_id_info{key_id_hash="${keyIDHash('key-two')}"} 1`));
  assert.match(keyIDHash('x'), /^sha256:[0-9a-f]{64}$/);
});

test('--health-listen accepts HOST:PORT, [IPv6]:PORT and off', () => {
  assert.deepEqual(parseHealthListen(DEFAULT_HEALTH_LISTEN), { host: '127.0.0.1', port: 9787 });
  assert.deepEqual(parseHealthListen('[::1]:8080'), { host: '::1', port: 8080 });
  assert.equal(parseHealthListen('off'), undefined);
  for (const bad of ['9787', 'localhost', '127.0.0.1:99999', ':80']) {
    assert.throws(() => parseHealthListen(bad), AtrestError, bad);
  }
});

test('/readyz lists failing checks with 503 while /livez stays 200', async (t) => {
  let failing: string | undefined = 'backend down';
  const server = await startHealthServer({
    host: '127.0.0.1',
    port: 0,
    logger: silentLogger,
    metrics: () => '',
    checks: [
      { name: 'socket', check: () => undefined },
      { name: 'self-test', check: () => failing },
    ],
  });
  t.after(() => server.close());
  const base = `http://127.0.0.1:${server.port}`;
  const ready = await fetch(`${base}/readyz`);
  assert.equal(ready.status, 503);
  assert.equal(
    await ready.text(),
    '[+]socket ok\n[-]self-test failed: backend down\nreadyz check failed\n',
  );
  assert.equal((await fetch(`${base}/healthz`)).status, 503);
  assert.equal((await fetch(`${base}/livez`)).status, 200);
  failing = undefined;
  assert.equal(await (await fetch(`${base}/readyz`)).text(), 'ok');
  assert.equal((await fetch(`${base}/metrics`, { method: 'POST' })).status, 405);
});
