// The npm package as a user gets it: `npm pack` (prepack builds dist/src), the tarball installed
// into an empty prefix with --ignore-scripts (no native build, as on a machine without a compiler),
// then the installed `atrest` binary: --version, keys init, serve with a KMS v1 and v2 round trip,
// SIGTERM; and `--backend pkcs11` without a usable pkcs11js says so in one line.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createKmsV1Client, createKmsV2Client, newUID } from '../../src/kms-client/index.js';

const exec = promisify(execFile);

async function run(cmd: string, args: string[], cwd?: string) {
  return exec(cmd, args, { cwd, maxBuffer: 32 << 20, timeout: 10 * 60_000 });
}

test('npm pack installs into an empty prefix without install scripts and serves', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'atrest-pack-'));
  t.after(() => rm(dir, { recursive: true, force: true }));

  const packed = await run('npm', ['pack', '--json', '--pack-destination', dir]);
  const [info] = JSON.parse(packed.stdout.slice(packed.stdout.indexOf('[')));
  const files = new Set<string>(info.files.map((f: { path: string }) => f.path));
  for (const f of ['LICENSE', 'package.json', 'README.md', 'dist/src/cli/main.js', 'dist/src/index.js']) {
    assert.ok(files.has(f), `the tarball holds ${f}`);
  }
  for (const f of files) assert.ok(!/^dist\/(test|bench)\//.test(f), `no ${f} in the tarball`);
  const license = await readFile('LICENSE', 'utf8');
  assert.match(license, /Apache License\s+Version 2\.0, January 2004/);
  assert.match(license, /END OF TERMS AND CONDITIONS/);
  const pkg = JSON.parse(await readFile('package.json', 'utf8'));
  assert.equal(pkg.optionalDependencies?.pkcs11js !== undefined, true);
  assert.equal(pkg.dependencies?.pkcs11js, undefined);

  const prefix = join(dir, 'prefix');
  await run('npm', [
    'install', '--global', '--prefix', prefix, '--ignore-scripts', '--no-audit', '--no-fund',
    join(dir, info.filename),
  ]);
  const atrest = join(prefix, 'bin', 'atrest');
  assert.equal((await run(atrest, ['--version'])).stdout.trim(), pkg.version);

  const keyring = join(dir, 'keys', 'keyring.json');
  assert.match((await run(atrest, ['keys', 'init', '--keyring', keyring])).stdout, /created keyring/);

  const socket = join(dir, 'run', 'kms.sock');
  const child = spawn(atrest, [
    'serve', '--listen', `unix://${socket}`, '--keyring', keyring, '--health-listen', '127.0.0.1:0',
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let stderr = '';
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  await new Promise<void>((resolve, reject) => {
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      if (stderr.includes('"msg":"serving"')) resolve();
    });
    void exited.then(() => reject(new Error(`serve exited before serving:\n${stderr}`)));
  });

  const endpoint = `unix://${socket}`;
  const v1 = createKmsV1Client({ endpoint, timeoutMs: 10_000 });
  const v2 = createKmsV2Client({ endpoint, timeoutMs: 10_000 });
  const plain = randomBytes(40);
  assert.deepEqual(await v1.decrypt(await v1.encrypt(plain)), plain);
  const status = await v2.status();
  assert.equal(status.healthz, 'ok');
  const enc = await v2.encrypt(plain, newUID());
  assert.equal(enc.keyID, status.keyID);
  assert.deepEqual(await v2.decrypt({ ...enc, uid: newUID() }), plain);
  await v1.close();
  await v2.close();
  child.kill('SIGTERM');
  assert.equal(await exited, 0, stderr);
  assert.equal(existsSync(socket), false);

  // pkcs11js was installed but not built (--ignore-scripts), then not installed at all.
  const config = join(dir, 'backends.yaml');
  await writeFile(config, [
    'pkcs11:',
    '  module: /usr/lib/softhsm/libsofthsm2.so',
    '  tokenLabel: atrest',
    '  keyLabel: atrest-kek',
    `  pinFile: ${join(dir, 'pin')}`,
    '',
  ].join('\n'));
  const installed = join(prefix, 'lib', 'node_modules', 'atrest', 'node_modules', 'pkcs11js');
  for (const state of ['unbuilt', 'absent']) {
    if (state === 'absent') await rm(installed, { recursive: true, force: true });
    else assert.ok(existsSync(installed), 'npm installs the optional package');
    const failed = await run(atrest, [
      'serve', '--listen', `unix://${join(dir, 'run2', 'kms.sock')}`, '--backend', 'pkcs11',
      '--backend-config', config, '--health-listen', 'off',
    ]).then(
      () => assert.fail(`serve --backend pkcs11 started with pkcs11js ${state}`),
      (err: { code: number; stderr: string }) => err,
    );
    assert.notEqual(failed.code, 0);
    const lines = failed.stderr.trim().split('\n');
    assert.equal(lines.length, 1, `one line (${state}):\n${failed.stderr}`);
    assert.match(lines[0]!, /--backend pkcs11 needs the optional npm package "pkcs11js"/);
    assert.doesNotMatch(failed.stderr, /\n\s+at /, 'no stack trace');
  }
});
