// The npm package as a user gets it: `npm pack` (prepack builds dist/src), the tarball installed
// into an empty prefix with --ignore-scripts (no native build, as on a machine without a compiler),
// then the installed `atrest` binary: --version, keys init, serve with a KMS v1 and v2 round trip,
// SIGTERM; and `--backend pkcs11` without a usable pkcs11js says so in one line. The package is
// installed under ROOT/usr/local, as the systemd unit's instructions say, and the unit as written
// is verified against that root (systemd-analyze verify: directives, and that ExecStart resolves).

import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parse } from 'yaml';
import { createKmsV1Client, createKmsV2Client, newUID } from '../../src/kms-client/index.js';

const exec = promisify(execFile);

async function run(cmd: string, args: string[], cwd?: string) {
  return exec(cmd, args, { cwd, maxBuffer: 32 << 20, timeout: 10 * 60_000 });
}

let dir: string;
let root: string;
let prefix: string;
let pkg: { version: string; dependencies?: Record<string, string>; optionalDependencies?: Record<string, string> };

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'atrest-pack-'));
  process.on('exit', () => {
    void rm(dir, { recursive: true, force: true });
  });
  pkg = JSON.parse(await readFile('package.json', 'utf8'));
  root = join(dir, 'root');
  prefix = join(root, 'usr', 'local');
  await mkdir(prefix, { recursive: true });
});

test('npm pack installs into an empty prefix without install scripts and serves', { timeout: 15 * 60_000 }, async (t) => {
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
  assert.equal(pkg.optionalDependencies?.['pkcs11js'] !== undefined, true);
  assert.equal(pkg.dependencies?.['pkcs11js'], undefined);
  assert.equal(pkg.optionalDependencies?.['@kubernetes/client-node'] !== undefined, true);
  assert.equal(pkg.dependencies?.['@kubernetes/client-node'], undefined);

  await run('npm', [
    'install', '--global', '--prefix', prefix, '--ignore-scripts', '--no-audit', '--no-fund',
    join(dir, info.filename),
  ]);
  const atrest = join(prefix, 'bin', 'atrest');
  assert.equal((await run(atrest, ['--version'])).stdout.trim(), pkg.version);

  // A serve-only install: without the Kubernetes client (as with --omit=optional), the plugin below
  // still serves, and the one command that needs the client says which package to install.
  const clientNode = join(prefix, 'lib', 'node_modules', 'atrest', 'node_modules', '@kubernetes', 'client-node');
  assert.ok(existsSync(clientNode), 'npm installs the optional Kubernetes client');
  await rm(clientNode, { recursive: true, force: true });
  const viaApi = await run(atrest, ['rewrite', '--via-api', '--resource', 'secrets', '--kubeconfig', join(dir, 'none')]).then(
    () => assert.fail('rewrite --via-api ran without @kubernetes/client-node'),
    (err: { code: number; stderr: string }) => err,
  );
  assert.equal(viaApi.code, 1);
  assert.match(viaApi.stderr, /needs the optional package @kubernetes\/client-node, which is not installed: npm install @kubernetes\/client-node@1\.4/);
  assert.doesNotMatch(viaApi.stderr, /\n\s+at /, 'no stack trace');

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

test('the systemd unit verifies as written against the installed package, and matches the static Pod', async () => {
  assert.ok(existsSync(join(prefix, 'bin', 'atrest')), 'the package test installed atrest first');
  const unitText = await readFile('deploy/systemd/atrest.service', 'utf8');
  await mkdir(join(root, 'etc', 'systemd', 'system'), { recursive: true });
  await writeFile(join(root, 'etc', 'systemd', 'system', 'atrest.service'), unitText);
  // The targets the unit orders itself against, from the host's systemd.
  await cp('/usr/lib/systemd/system', join(root, 'usr', 'lib', 'systemd', 'system'), {
    recursive: true,
    verbatimSymlinks: true,
  });
  // ExecReload's /bin/kill, as on any host.
  await mkdir(join(root, 'bin'), { recursive: true });
  await cp('/bin/kill', join(root, 'bin', 'kill'));
  const verified = await run('systemd-analyze', ['verify', `--root=${root}`, 'atrest.service']);
  assert.equal(verified.stderr.trim(), '', 'systemd-analyze verify reports nothing');

  // And it really checks: without the binary in the root, ExecStart does not resolve.
  const empty = join(dir, 'empty-root');
  await cp(join(root, 'etc'), join(empty, 'etc'), { recursive: true });
  await cp(join(root, 'bin'), join(empty, 'bin'), { recursive: true });
  await cp(join(root, 'usr', 'lib'), join(empty, 'usr', 'lib'), { recursive: true, verbatimSymlinks: true });
  const unresolved = await run('systemd-analyze', ['verify', `--root=${empty}`, 'atrest.service']).then(
    () => assert.fail('verify passed without atrest installed'),
    (err: { stderr: string }) => err,
  );
  assert.match(unresolved.stderr, /Command atrest is not executable/);

  // Continuation lines joined, as systemd reads them.
  const joined = unitText.replace(/\\\n\s*/g, ' ');
  const directive = (name: string): string[] =>
    [...joined.matchAll(new RegExp(`^${name}=(.*)$`, 'gm'))].map((m) => m[1]!.trim());
  const execStart = directive('ExecStart')[0]!.split(/\s+/);
  assert.equal(execStart[0], 'atrest', 'no directory in ExecStart: systemd searches /usr/local/bin and /usr/bin');
  assert.equal(execStart[1], 'serve');
  // Same socket, keyring and health listener as the static Pod, so one EncryptionConfiguration serves both.
  const pod = parse(await readFile('deploy/kubernetes/atrest-kms-plugin.yaml', 'utf8'));
  const podArgs: string[] = pod.spec.containers[0].args;
  for (const flag of ['--listen=', '--keyring=', '--health-listen=']) {
    assert.equal(execStart.find((a) => a.startsWith(flag)), podArgs.find((a) => a.startsWith(flag)));
  }
  const mode = parseInt(directive('RuntimeDirectoryMode')[0]!, 8);
  assert.equal(mode & 0o055, 0o055, 'group and others may traverse the socket directory (--socket-group)');
  assert.equal(mode & 0o022, 0, 'nobody but root may write the socket directory');
  assert.deepEqual(directive('CapabilityBoundingSet'), ['']);
  assert.deepEqual(directive('ExecReload'), ['/bin/kill -HUP $MAINPID']);
});
