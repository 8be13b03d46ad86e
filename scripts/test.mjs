#!/usr/bin/env node
// `npm test`: installs what the tests need (scripts/setup/*.sh, each idempotent), builds, then runs
// every suite in order: node's test runner over dist/test/, the Go conformance harness, the end-to-end
// scenario against a real kube-apiserver. Exits non-zero if any step fails; never skips a suite.
//
//   node scripts/test.mjs                 everything
//   node scripts/test.mjs --only e2e      setup + build + one suite (unit | conformance | e2e | e2e-1.28)

import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cacheBin = join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'atrest', 'bin');
const env = { ...process.env, PATH: `${cacheBin}:${process.env.PATH}`, ATREST_CACHE_BIN: cacheBin };

const SUITES = {
  unit: ['node', ['--test', '--test-reporter=spec', 'dist/test/']],
  conformance: ['bash', ['conformance/run.sh']],
  e2e: ['bash', ['e2e/run.sh']],
  // the same scenario against the oldest API server line tested (KMS v2 Status "v2beta1" only)
  'e2e-1.28': ['env', ['ATREST_E2E_KUBE_APISERVER=kube-apiserver-v1.28.15', 'bash', 'e2e/run.sh']],
};

const onlyIndex = process.argv.indexOf('--only');
const only = onlyIndex >= 0 ? process.argv[onlyIndex + 1] : undefined;
if (only !== undefined && !(only in SUITES)) {
  console.error(`unknown suite "${only}"; choose one of ${Object.keys(SUITES).join(', ')}`);
  process.exit(2);
}

function run(label, cmd, args) {
  const started = Date.now();
  console.log(`\n=== ${label}: ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { cwd: root, env, stdio: 'inherit' });
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  const ok = r.status === 0;
  console.log(`=== ${label}: ${ok ? 'ok' : `FAILED (exit ${r.status ?? r.signal})`} in ${secs}s`);
  return ok;
}

const setups = readdirSync(join(root, 'scripts', 'setup'))
  .filter((f) => f.endsWith('.sh'))
  .sort();
for (const s of setups) {
  if (!run(`setup ${s}`, 'bash', [join('scripts', 'setup', s)])) process.exit(1);
}
if (!run('build', 'npx', ['tsc', '-p', '.'])) process.exit(1);

const results = [];
for (const [name, [cmd, args]] of Object.entries(SUITES)) {
  if (only !== undefined && name !== only) continue;
  results.push([name, run(`suite ${name}`, cmd, args)]);
}
const failed = results.filter(([, ok]) => !ok).map(([n]) => n);
const ran = results.map(([n]) => n).join(', ');
if (failed.length > 0) {
  console.log(`\nFAILED suites: ${failed.join(', ')} (of ${ran})`);
  process.exit(1);
}
console.log(`\nevery suite passed (${ran})`);
