#!/usr/bin/env node
// `npm test`: installs what the tests need (scripts/setup/*.sh, each idempotent), builds, then runs
// every suite in order: node's test runner over dist/test/, the Go conformance harness, the end-to-end
// scenario against a real kube-apiserver. Exits non-zero if any step fails; never skips a suite.
// Setup runs in two lanes at once: the Go builds (CPU-bound) one after another, and the scripts that
// mostly download (a line `# setup-lane: download`: apt, pip) one after another beside them, with the
// TypeScript build; a cold run waits for the longer lane instead of the sum.
//
//   node scripts/test.mjs                 everything
//   node scripts/test.mjs --only e2e      setup + build + one suite (unit | conformance | e2e | e2e-1.28 | ha)
//   node scripts/test.mjs --only setup    setup + build, no suite

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
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
  // two kube-apiservers on one etcd: runbooks 2 and 3 and the KMS key rotation of docs/operations.md
  ha: ['node', ['--test', '--test-reporter=spec', 'dist/e2e/ha/ha.test.js']],
};

const onlyIndex = process.argv.indexOf('--only');
const only = onlyIndex >= 0 ? process.argv[onlyIndex + 1] : undefined;
if (only !== undefined && only !== 'setup' && !(only in SUITES)) {
  console.error(`unknown suite "${only}"; choose one of setup, ${Object.keys(SUITES).join(', ')}`);
  process.exit(2);
}

// pkcs11js is an optional dependency, so npm ci carries on without it when node-gyp cannot build it;
// the PKCS#11 tests and the image build need it: say so now rather than as a compile error later.
if (!existsSync(join(root, 'node_modules', 'pkcs11js', 'build', 'Release', 'pkcs11.node'))) {
  console.error(
    'node_modules/pkcs11js was not built by npm ci (its native build needs Node\'s headers). ' +
      'Point npm at them and reinstall, e.g. `npm_config_nodedir=/usr npm ci` (where /usr/include/node exists); ' +
      '.ci/run does this for you.',
  );
  process.exit(1);
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

/** Runs a step with its output collected, printed whole when it ends (lanes run side by side). */
function runCollected(label, cmd, args) {
  return new Promise((resolve) => {
    const started = Date.now();
    const child = spawn(cmd, args, { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
    const chunks = [];
    child.stdout.on('data', (d) => chunks.push(d));
    child.stderr.on('data', (d) => chunks.push(d));
    child.on('close', (code, signal) => {
      const secs = ((Date.now() - started) / 1000).toFixed(1);
      const ok = code === 0;
      process.stdout.write(`\n=== ${label}: ${cmd} ${args.join(' ')}\n${Buffer.concat(chunks).toString()}`);
      process.stdout.write(`=== ${label}: ${ok ? 'ok' : `FAILED (exit ${code ?? signal})`} in ${secs}s\n`);
      resolve(ok);
    });
  });
}

async function lane(steps) {
  for (const [label, cmd, args] of steps) if (!(await runCollected(label, cmd, args))) return false;
  return true;
}

const setupDir = join(root, 'scripts', 'setup');
const setups = readdirSync(setupDir)
  .filter((f) => f.endsWith('.sh'))
  .sort()
  .map((f) => ({
    step: [`setup ${f}`, 'bash', [join('scripts', 'setup', f)]],
    download: /^# setup-lane: download$/m.test(readFileSync(join(setupDir, f), 'utf8')),
  }));
const lanes = await Promise.all([
  lane(setups.filter((s) => !s.download).map((s) => s.step)),
  lane([...setups.filter((s) => s.download).map((s) => s.step), ['build', 'npx', ['tsc', '-p', '.']]]),
]);
if (lanes.includes(false)) process.exit(1);

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
