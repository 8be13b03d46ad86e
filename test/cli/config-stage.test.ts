// `atrest config stage` as a real process: exit 0 for a safe direct switch, exit 3 with the reason and
// the phases for one that is not, phase files written 0600 with their secrets (and valid: each loads,
// and each is a safe direct switch from the one before), secrets REDACTED on stdout.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli, tempDir } from '../kms/helpers.js';

const K1 = Buffer.alloc(32, 0x11).toString('base64');
const K2 = Buffer.alloc(32, 0x22).toString('base64');

function aescbc(...keys: [string, string][]): string {
  return [
    'apiVersion: apiserver.config.k8s.io/v1',
    'kind: EncryptionConfiguration',
    'resources:',
    '  - resources: [secrets]',
    '    providers:',
    '      - aescbc:',
    '          keys:',
    ...keys.flatMap(([n, s]) => [`            - name: ${n}`, `              secret: ${s}`]),
    '      - identity: {}',
    '',
  ].join('\n');
}

test('config stage refuses a direct key change (exit 3), explains it and writes three valid phases', async (t) => {
  const dir = await tempDir(t, 'atrest-stage-');
  await writeFile(join(dir, 'old.yaml'), aescbc(['key1', K1]));
  await writeFile(join(dir, 'new.yaml'), aescbc(['key2', K2]));
  const r = await runCli(
    t,
    ['config', 'stage', '--from', 'old.yaml', '--to', 'new.yaml', '--out-dir', 'stage'],
    dir,
  );
  assert.equal(r.code, 3, r.stderr);
  assert.match(r.stdout, /^direct switch from old.yaml to new.yaml: NOT SAFE\n/);
  assert.match(r.stdout, /their reads fail with "no matching prefix found"/);
  assert.match(
    r.stdout,
    /1 read\s+stage\/1-read.yaml\s+secrets: writes aescbc\/key1 \(unchanged\); now also reads aescbc\/key2/,
  );
  assert.match(r.stdout, /after phase 2: "atrest rewrite --encryption-config stage\/2-write.yaml"/);
  assert.match(r.stderr, /config stage: refusing a direct switch from old.yaml to new.yaml/);
  for (const out of [r.stdout, r.stderr]) assert.ok(!out.includes(K1) && !out.includes(K2));

  assert.deepEqual((await readdir(join(dir, 'stage'))).sort(), [
    '1-read.yaml',
    '2-write.yaml',
    '3-final.yaml',
  ]);
  assert.equal((await stat(join(dir, 'stage'))).mode & 0o777, 0o700);
  const read = await readFile(join(dir, 'stage', '1-read.yaml'), 'utf8');
  assert.equal((await stat(join(dir, 'stage', '1-read.yaml'))).mode & 0o777, 0o600);
  assert.ok(
    read.indexOf(`secret: ${K1}`) > 0 &&
      read.indexOf(`secret: ${K1}`) < read.indexOf(`secret: ${K2}`),
  );

  // Each written phase loads, and moving from one to the next is a safe direct switch (exit 0).
  const chain = ['old.yaml', 'stage/1-read.yaml', 'stage/2-write.yaml', 'stage/3-final.yaml'];
  for (let i = 1; i < chain.length; i++) {
    const step = await runCli(
      t,
      ['config', 'stage', '--from', chain[i - 1]!, '--to', chain[i]!],
      dir,
    );
    assert.equal(step.code, 0, `${chain[i - 1]} -> ${chain[i]}: ${step.stdout}${step.stderr}`);
    assert.match(step.stdout, /: safe\n/);
  }
  const last = await runCli(
    t,
    ['config', 'stage', '--from', 'stage/2-write.yaml', '--to', 'stage/3-final.yaml'],
    dir,
  );
  assert.match(
    last.stderr,
    /warning: secrets: 3-final.yaml no longer reads aescbc\/key1 .* only after "atrest rewrite" converged/,
  );
  const same = await runCli(
    t,
    ['config', 'stage', '--from', 'stage/3-final.yaml', '--to', 'new.yaml'],
    dir,
  );
  assert.equal(same.code, 0);
  assert.match(same.stdout, /writes aescbc\/key2 \(unchanged\)/);
});

test('config stage -o json lists the problems and the phases (secrets REDACTED)', async (t) => {
  const dir = await tempDir(t, 'atrest-stage-');
  await writeFile(join(dir, 'old.yaml'), aescbc(['key1', K1]));
  await writeFile(join(dir, 'new.yaml'), aescbc(['key2', K2]));
  const r = await runCli(
    t,
    ['config', 'stage', '--from', 'old.yaml', '--to', 'new.yaml', '-o', 'json'],
    dir,
  );
  assert.equal(r.code, 3);
  const doc = JSON.parse(r.stdout) as {
    directSwitch: { safe: boolean; problems: string[] };
    phases: { phase: number; name: string; config: unknown }[];
  };
  assert.equal(doc.directSwitch.safe, false);
  assert.equal(doc.directSwitch.problems.length, 2);
  assert.deepEqual(
    doc.phases.map((p) => p.name),
    ['read', 'write', 'final'],
  );
  assert.ok(!r.stdout.includes(K1) && r.stdout.includes('REDACTED'));
});

test('config stage reports unusable configurations with exit 2 (a reused key name, an invalid file)', async (t) => {
  const dir = await tempDir(t, 'atrest-stage-');
  await writeFile(join(dir, 'old.yaml'), aescbc(['key1', K1]));
  await writeFile(join(dir, 'reused.yaml'), aescbc(['key1', K2]));
  await writeFile(join(dir, 'bad.yaml'), aescbc(['key1', '<key1 secret, unchanged>']));
  const reused = await runCli(
    t,
    ['config', 'stage', '--from', 'old.yaml', '--to', 'reused.yaml'],
    dir,
  );
  assert.equal(reused.code, 2);
  assert.match(
    reused.stderr,
    /reused.yaml gives key key1 another secret than old.yaml \(REDACTED\)/,
  );
  const bad = await runCli(t, ['config', 'stage', '--from', 'old.yaml', '--to', 'bad.yaml'], dir);
  assert.equal(bad.code, 2);
  assert.match(
    bad.stderr,
    /bad.yaml is invalid:\n\s+resources\[0\]\.providers\[0\]\.aescbc\.keys\[0\]\.secret/,
  );
});
