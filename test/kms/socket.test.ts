// Socket hygiene on real UNIX sockets: parent dir 0700, mode 0600 from birth, stale sockets
// removed, live sockets and non-sockets refused, abstract sockets, removal on close.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdir, readFile, stat, unlink, writeFile, readdir } from 'node:fs/promises';
import { createConnection, createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { linkSync, renameSync } from 'node:fs';
import { AtrestError } from '../../src/errors.js';
import { parseUnixEndpoint } from '../../src/grpc/endpoint.js';
import {
  listenUnix,
  parseSocketMode,
  prepareSocketPath,
  resolveGroup,
} from '../../src/kms/socket.js';
import { tempDir } from './helpers.js';

function hasCode(code: string, pattern?: RegExp) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof AtrestError, String(err));
    assert.equal(err.code, code);
    if (pattern) assert.match(err.message, pattern);
    return true;
  };
}

function connects(address: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ path: address });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Leaves a socket file behind with nobody listening, as a killed plugin does. */
async function staleSocket(path: string): Promise<void> {
  const server: Server = createServer();
  await new Promise<void>((r) => server.listen(path, r));
  // Closing the handle would unlink the path; duplicate it first so the file survives.
  const keep = path + '.keep';
  linkSync(path, keep);
  await new Promise<void>((r) => server.close(() => r()));
  renameSync(keep, path);
}

test('a missing parent directory is created with mode 0700 and the socket is 0600', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'run', 'atrest', 'kms.sock');
  const ep = parseUnixEndpoint(`unix://${path}`);
  const previous = process.umask(0o000); // the most permissive umask must not leak into the socket
  try {
    await prepareSocketPath(ep);
    const l = await listenUnix(ep, {}, (s) => s.destroy());
    t.after(() => l.close());
    assert.equal((await stat(join(dir, 'run', 'atrest'))).mode & 0o777, 0o700);
    const st = await stat(path);
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o600);
  } finally {
    process.umask(previous);
  }
});

test('--socket-mode and --socket-group are applied after bind', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'kms.sock');
  const ep = parseUnixEndpoint(`unix://${path}`);
  const gid = (await stat(dir)).gid;
  const l = await listenUnix(ep, { mode: parseSocketMode('0660'), gid }, (s) => s.destroy());
  t.after(() => l.close());
  const st = await stat(path);
  assert.equal(st.mode & 0o777, 0o660);
  assert.equal(st.gid, gid);
});

test('socket modes that open the socket to others or lock out the owner are refused', () => {
  assert.equal(parseSocketMode('0600'), 0o600);
  assert.equal(parseSocketMode('660'), 0o660);
  for (const bad of ['0666', '0606', '0400', '600x', '']) {
    assert.throws(() => parseSocketMode(bad), hasCode('ERR_CONFIG_INVALID'), bad);
  }
});

test('groups resolve by name from the group file or by number', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'group');
  await writeFile(file, 'root:x:0:\nkube:x:1234:apiserver\n');
  assert.equal(await resolveGroup('kube', file), 1234);
  assert.equal(await resolveGroup('42', file), 42);
  await assert.rejects(
    resolveGroup('nobody-here', file),
    hasCode('ERR_CONFIG_INVALID', /unknown group/),
  );
});

test('a stale socket nobody answers on is removed', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'kms.sock');
  await staleSocket(path);
  assert.ok((await stat(path)).isSocket());
  assert.equal(await connects(path), false);
  const ep = parseUnixEndpoint(`unix://${path}`);
  await prepareSocketPath(ep);
  const l = await listenUnix(ep, {}, (s) => s.destroy());
  t.after(() => l.close());
  assert.equal(await connects(path), true);
});

test('a socket with a live listener is refused with "another plugin is listening"', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'kms.sock');
  const other = createServer((s) => s.destroy());
  await new Promise<void>((r) => other.listen(path, r));
  t.after(() => new Promise<void>((r) => other.close(() => r())));
  await assert.rejects(
    prepareSocketPath(parseUnixEndpoint(`unix://${path}`)),
    hasCode('ERR_SOCKET_IN_USE', new RegExp(`another plugin is listening on ${path}`)),
  );
  assert.equal(await connects(path), true, 'the other listener is untouched');
});

test('a path that is not a socket is refused and left alone', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'kms.sock');
  await writeFile(file, 'precious');
  await assert.rejects(
    prepareSocketPath(parseUnixEndpoint(`unix://${file}`)),
    hasCode('ERR_SOCKET_NOT_A_SOCKET', /is not a socket/),
  );
  const sub = join(dir, 'adir');
  await mkdir(sub);
  await assert.rejects(
    prepareSocketPath(parseUnixEndpoint(`unix://${sub}`)),
    hasCode('ERR_SOCKET_NOT_A_SOCKET'),
  );
  assert.equal((await stat(file)).size, 8);
});

test('a socket path longer than the kernel limit is refused clearly', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'x'.repeat(120), 'kms.sock');
  await assert.rejects(
    prepareSocketPath(parseUnixEndpoint(`unix://${path}`)),
    hasCode('ERR_SOCKET_ENDPOINT', /107 bytes/),
  );
});

test('unix:///@name is refused with a clear message and creates no file', async () => {
  // Node.js 20 would bind the abstract name NUL-padded, which kube-apiserver cannot reach.
  const name = `atrest-test-${randomBytes(6).toString('hex')}`;
  const ep = parseUnixEndpoint(`unix:///@${name}`);
  assert.equal(ep.abstract, true);
  const before = await readdir(process.cwd());
  await assert.rejects(prepareSocketPath(ep), hasCode('ERR_SOCKET_ENDPOINT', /abstract socket .* not supported/));
  await assert.rejects(
    listenUnix(ep, {}, (s) => s.destroy()),
    hasCode('ERR_SOCKET_ENDPOINT', /abstract socket .* not supported/),
  );
  assert.equal(await connects('\0' + name), false);
  assert.deepEqual(await readdir(process.cwd()), before);
});

test('closing the listener removes the socket file', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'kms.sock');
  const ep = parseUnixEndpoint(`unix://${path}`);
  const l = await listenUnix(ep, {}, (s) => s.destroy());
  await l.close();
  await assert.rejects(stat(path), /ENOENT/);
});

test('a deleted socket file is noticed and re-created with mode 0600', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'kms.sock');
  const ep = parseUnixEndpoint(`unix://${path}`);
  const l = await listenUnix(ep, {}, (s) => s.destroy());
  t.after(() => l.close());
  assert.equal(await l.present(), true);
  assert.equal(await l.restore(), false, 'nothing to do while the socket is there');
  await unlink(path);
  assert.equal(await l.present(), false);
  assert.equal(await l.restore(), true);
  assert.equal(await l.present(), true);
  assert.equal((await stat(path)).mode & 0o777, 0o600);
  assert.equal(await connects(path), true);
});

test('a socket replaced by a regular file is reported and the file left alone', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'kms.sock');
  const l = await listenUnix(parseUnixEndpoint(`unix://${path}`), {}, (s) => s.destroy());
  t.after(() => l.close());
  await unlink(path);
  await writeFile(path, 'someone else');
  assert.equal(await l.present(), false);
  await assert.rejects(l.restore(), hasCode('ERR_SOCKET_NOT_A_SOCKET'));
  assert.equal((await stat(path)).size, 12);
  await l.close();
  assert.equal(
    await readFile(path, 'utf8'),
    'someone else',
    'closing never deletes a file that is not ours',
  );
});

test('a socket directory writable by others is refused unless it has the sticky bit like /tmp', async (t) => {
  const dir = await tempDir(t);
  const open = join(dir, 'open');
  await mkdir(open);
  await chmod(open, 0o777);
  await assert.rejects(
    prepareSocketPath(parseUnixEndpoint(`unix://${open}/kms.sock`)),
    hasCode('ERR_SOCKET_ENDPOINT', /writable by group or others/),
  );
  await chmod(open, 0o1777);
  await prepareSocketPath(parseUnixEndpoint(`unix://${open}/kms.sock`));
});
