#!/usr/bin/env node
// `npm run test:repeat -- N [test paths...]`: builds once, then runs the node suite (node --test
// dist/test/, or the given paths) N times with two CPU burner processes beside it, the way a busy
// CI machine runs it. Prints every failure (which run, which file, which test, the error's first
// line), keeps each run's full output in a log directory, and ends with one summary line. Exits
// non-zero if any run failed. A test that fails one run in ten is a red test: this finds it.

import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, createWriteStream } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cacheBin = join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'atrest', 'bin');
const env = { ...process.env, PATH: `${cacheBin}:${process.env.PATH}`, ATREST_CACHE_BIN: cacheBin };
const BURNERS = 2;

const [countArg, ...paths] = process.argv.slice(2);
const runs = Number(countArg ?? '1');
if (!Number.isInteger(runs) || runs < 1) {
  console.error('usage: npm run test:repeat -- N [test files or directories under dist/test/]');
  process.exit(2);
}
const targets = paths.length > 0 ? paths : ['dist/test/'];

console.log('=== build: npx tsc -p .');
const build = spawnSync('npx', ['tsc', '-p', '.'], { cwd: root, env, stdio: 'inherit' });
if (build.status !== 0) {
  console.error('=== build FAILED');
  process.exit(1);
}

const burners = Array.from({ length: BURNERS }, () =>
  spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' }),
);
function stopBurners() {
  for (const b of burners) if (b.exitCode === null && b.signalCode === null) b.kill('SIGKILL');
}
process.on('exit', stopBurners);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    stopBurners();
    process.exit(130);
  });
}

const logs = mkdtempSync(join(tmpdir(), 'atrest-test-repeat-'));
const reporter = join(root, 'scripts', 'test-repeat-reporter.mjs');
console.log(`=== ${runs} run(s) of node --test ${targets.join(' ')} beside ${BURNERS} CPU burners; logs in ${logs}`);

function runOnce(i) {
  const log = join(logs, `run-${i}.log`);
  const failures = join(logs, `run-${i}.failures.jsonl`);
  writeFileSync(failures, '');
  const out = createWriteStream(log);
  const started = Date.now();
  const child = spawn(
    process.execPath,
    [
      '--test',
      '--test-reporter=spec',
      '--test-reporter-destination=stdout',
      `--test-reporter=${reporter}`,
      `--test-reporter-destination=${failures}`,
      ...targets,
    ],
    { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  child.stdout.pipe(out, { end: false });
  child.stderr.pipe(out, { end: false });
  return new Promise((resolve) => {
    child.on('close', (code, signal) => {
      out.end();
      const secs = ((Date.now() - started) / 1000).toFixed(0);
      const lines = readFileSync(failures, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
      const summary = lines.find((l) => l.summary) ?? { passed: 0, failed: 0 };
      const failed = lines.filter((l) => !l.summary);
      const ok = code === 0 && failed.length === 0;
      if (!ok && failed.length === 0) {
        failed.push({ file: '', test: '(the test runner itself)', error: `exit ${code ?? signal}, see ${log}` });
      }
      console.log(
        `run ${i}/${runs}: ${ok ? 'ok' : 'FAILED'} — ${summary.passed} passed, ${failed.length} failed in ${secs}s`,
      );
      for (const f of failed) {
        const file = f.file ? f.file.replace(`${root}/`, '') : '';
        console.log(`  FAIL run ${i}: ${file}${file ? ': ' : ''}${f.test}\n      ${f.error}`);
      }
      resolve(failed.map((f) => ({ ...f, run: i })));
    });
  });
}

const all = [];
let failedRuns = 0;
for (let i = 1; i <= runs; i++) {
  const failed = await runOnce(i);
  if (failed.length > 0) failedRuns++;
  all.push(...failed);
}
stopBurners();

const byTest = new Map();
for (const f of all) {
  const key = `${f.file ? f.file.replace(`${root}/`, '') + ': ' : ''}${f.test}`;
  byTest.set(key, [...(byTest.get(key) ?? []), f.run]);
}
if (byTest.size > 0) {
  console.log('\nflaky or failing tests:');
  for (const [test, inRuns] of byTest) console.log(`  ${test} — failed in run(s) ${inRuns.join(', ')}`);
}
console.log(
  `\ntest:repeat: ${runs - failedRuns}/${runs} runs passed, ${all.length} failure(s) in ${byTest.size} test(s); logs in ${logs}`,
);
process.exit(failedRuns === 0 ? 0 : 1);
