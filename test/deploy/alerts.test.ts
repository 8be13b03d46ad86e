// deploy/monitoring/: the alert rules load in Prometheus (promtool check rules), behave as their
// unit tests say (promtool test rules), every alert has a test that shows it firing, and every
// atrest_* series a rule reads is one the plugin exports.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parse } from 'yaml';
import { createPluginMetrics } from '../../src/health/plugin-metrics.js';

const exec = promisify(execFile);
const RULES = 'deploy/monitoring/atrest-alerts.yaml';
const TESTS = 'deploy/monitoring/tests/atrest-alerts.test.yaml';

function promtool(): string {
  const bin = process.env['ATREST_CACHE_BIN'];
  assert.ok(bin, 'ATREST_CACHE_BIN is set (scripts/test.mjs sets it; setup 70 installs promtool)');
  return join(bin, 'promtool');
}

test('promtool check rules accepts the alert rules', async () => {
  const { stdout } = await exec(promtool(), ['check', 'rules', RULES]);
  assert.match(stdout, /SUCCESS: \d+ rules found/);
});

test('promtool test rules passes, and every alert is shown firing by a test', async () => {
  const { stdout } = await exec(promtool(), ['test', 'rules', TESTS]);
  assert.match(stdout, /SUCCESS/);
  const rules = parse(await readFile(RULES, 'utf8'));
  const alerts: string[] = rules.groups.flatMap((g: any) => g.rules.map((r: any) => r.alert));
  const tests = parse(await readFile(TESTS, 'utf8'));
  const fired = new Set<string>(
    tests.tests.flatMap((t: any) =>
      t.alert_rule_test.filter((a: any) => a.exp_alerts.length > 0).map((a: any) => a.alertname),
    ),
  );
  assert.deepEqual(alerts.filter((a) => !fired.has(a)), []);
});

test('every atrest_* series the rules read is exported by the plugin', async () => {
  const metrics = createPluginMetrics({ version: '0.0.0-test', backend: 'keyring' });
  metrics.activeKeyID('k1');
  metrics.recordCall('/v2.KeyManagementService/Encrypt', 'OK', 0.001);
  metrics.backendOperation('wrap', 'ok', 0.001);
  metrics.selfTest(true, Date.now());
  metrics.keyringReload(true);
  metrics.keySet({ fingerprint: 'kf1-000000000000000000000000', keys: 1, activeKeyID: 'k1' });
  const exported = new Set<string>();
  for (const m of metrics.registry.render().matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    exported.add(m[1]!);
    if (m[2] === 'histogram') for (const s of ['_bucket', '_sum', '_count']) exported.add(m[1]! + s);
  }
  const rules = await readFile(RULES, 'utf8');
  const used = new Set([...rules.matchAll(/\b(atrest_[a-z_]+)\{/g)].map((m) => m[1]!));
  assert.ok(used.size >= 8, `rules read ${[...used].join(', ')}`);
  for (const name of used) {
    assert.ok(exported.has(name), `the plugin exports ${name}`);
  }
});
