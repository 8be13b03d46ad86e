// The container image (scripts/build-image.sh) run as deploy/kubernetes/atrest-kms-plugin.yaml runs
// it: podman with runc, read-only root, every capability dropped, host network, the manifest's
// mounts, command and args. A KMS v1 and v2 round trip through the socket it creates, a key
// rotation that a SIGHUP really brings into service, and a clean SIGTERM. Needs root, podman and
// the image tooling (scripts/setup/80-container-tools.sh); the image is built here if the cache
// does not hold it yet.

import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { execFile } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parse } from 'yaml';
import { createKmsV1Client, createKmsV2Client, newUID } from '../../src/kms-client/index.js';
import {
  buildAndLoadImage,
  podman,
  podmanRunFromPod,
  startContainer,
  ulimitArgs,
  type ImageInfo,
} from './podman.js';

const exec = promisify(execFile);
const MANIFEST = 'deploy/kubernetes/atrest-kms-plugin.yaml';
const KEYRING_DIR = '/etc/kubernetes/atrest';
const SOCKET_DIR = '/var/run/atrest';

let image: ImageInfo;
before(async () => {
  image = await buildAndLoadImage();
}, { timeout: 30 * 60_000 });

async function manifest(): Promise<any> {
  return parse(await readFile(MANIFEST, 'utf8'));
}

/**
 * The manifest's health port replaced by port 0 (other tests share the host network); the plugin
 * logs the port it bound in its "serving" line.
 */
function withAnyHealthPort(args: string[]): string[] {
  const i = args.findIndex((a) => a.startsWith('--health-listen=127.0.0.1:'));
  assert.ok(i >= 0, 'the manifest passes --health-listen=127.0.0.1:PORT');
  return args.map((a, j) => (j === i ? '--health-listen=127.0.0.1:0' : a));
}

// Generous bounds so a wedged container fails the test instead of hanging the suite.
const SLOW = { timeout: 10 * 60_000 };

/** Runs the image's CLI once, as root, with the keyring directory mounted read-write. */
async function cli(keyringHostDir: string, ...args: string[]): Promise<string> {
  const { stdout, stderr } = await podman(
    'run', '--rm', '--runtime', 'runc', ...ulimitArgs(), '--user', '0:0', '--read-only',
    '--cap-drop=ALL', '--network', 'none', '--volume', `${keyringHostDir}:${KEYRING_DIR}:rw`,
    image.reference, ...args,
  );
  return stdout + stderr;
}

async function hostRoot(t: { after(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'atrest-image-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

test('the manifest runs the image this tree builds, and its probes use the health listener', async () => {
  const pod = await manifest();
  const c = pod.spec.containers[0];
  assert.equal(c.image, image.reference);
  assert.equal(image.reference, `localhost/atrest:${image.version}`);
  const pkg = JSON.parse(await readFile('package.json', 'utf8'));
  assert.equal(image.version, pkg.version);
  const listen = c.args.find((a: string) => a.startsWith('--health-listen='));
  const port = Number(listen.split(':').pop());
  for (const probe of [c.livenessProbe, c.readinessProbe, c.startupProbe]) {
    assert.equal(probe.httpGet.port, port);
    assert.equal(probe.httpGet.host, '127.0.0.1');
  }
  assert.equal(pod.spec.dnsPolicy, 'Default');
  // The docker archive (for `ctr -n k8s.io images import`) holds the same image under the same name.
  const { stdout: oci } = await exec('skopeo', ['inspect', '--config', `oci-archive:${image.oci}`]);
  const { stdout: docker } = await exec('skopeo', ['inspect', '--config', `docker-archive:${image.docker}`]);
  assert.deepEqual(JSON.parse(docker).rootfs, JSON.parse(oci).rootfs);
  assert.deepEqual(JSON.parse(docker).config.Entrypoint, c.command);
  const { stdout: raw } = await exec('tar', ['-xOf', image.docker, 'manifest.json']);
  assert.deepEqual(JSON.parse(raw)[0].RepoTags, [image.reference]);
});

test('the image holds node and the plugin only: no shell, no npm, no tests, non-root by default', async () => {
  const { stdout } = await podman(
    'run', '--rm', '--runtime', 'runc', ...ulimitArgs(), '--read-only', '--cap-drop=ALL',
    '--network', 'none', '--entrypoint', '/usr/bin/node', image.reference, '-e',
    `const fs = require('node:fs');
     console.log(JSON.stringify({
       uid: process.getuid(), gid: process.getgid(), node: process.versions.node,
       present: ['/bin/sh', '/usr/bin/sh', '/bin/bash', '/usr/bin/dash', '/usr/bin/npm',
         '/usr/share/nodejs/npm', '/app/dist/test', '/app/dist/bench', '/app/node_modules/typescript',
         '/app/node_modules/fast-check', '/app/src'].filter((p) => fs.existsSync(p)),
       main: fs.existsSync('/app/dist/src/cli/main.js'),
     }));`,
  );
  const facts = JSON.parse(stdout);
  assert.deepEqual(facts.present, []);
  assert.equal(facts.main, true);
  assert.equal(facts.uid, 65532);
  assert.equal(facts.gid, 65532);
  const [major, minor] = facts.node.split('.').map(Number);
  assert.ok(major > 20 || (major === 20 && minor >= 19), `node ${facts.node} meets engines >=20.19`);
  assert.ok(image.rootfsBytes < 200 * 1024 * 1024, `image is ${image.rootfsBytes} bytes`);
  const version = await podman('run', '--rm', '--runtime', 'runc', ...ulimitArgs(), '--read-only',
    '--cap-drop=ALL', '--network', 'none', image.reference, '--version');
  assert.equal(version.stdout.trim(), image.version);
});

test('as the static Pod: v1 and v2 round trips, keys rotate + SIGHUP switches keys, SIGTERM removes the socket', SLOW, async (t) => {
  const root = await hostRoot(t);
  const pod = await manifest();
  const name = `atrest-test-${process.pid}-${randomBytes(3).toString('hex')}`;
  const run = await podmanRunFromPod(pod, root, name);
  const keyringHost = run.hostPathOf.get(KEYRING_DIR)!;
  const socketHost = run.hostPathOf.get(SOCKET_DIR)!;
  assert.ok(keyringHost !== undefined && socketHost !== undefined, 'manifest mounts both directories');
  const listenArg = run.args.find((a) => a.startsWith('--listen='))!;
  assert.equal(listenArg, `--listen=unix://${SOCKET_DIR}/kms.sock`);
  const keyringArg = run.args.find((a) => a.startsWith('--keyring='))!;
  assert.ok(keyringArg.startsWith(`--keyring=${KEYRING_DIR}/`), keyringArg);
  const keyringFile = keyringArg.slice('--keyring='.length);

  await (await import('node:fs/promises')).mkdir(keyringHost, { recursive: true, mode: 0o700 });
  assert.match(await cli(keyringHost, 'keys', 'init', '--keyring', keyringFile), /created keyring/);

  const ctr = startContainer([...run.podmanArgs, ...withAnyHealthPort(run.args)]);
  t.after(async () => {
    await podman('rm', '--force', '--ignore', name).catch(() => undefined);
  });
  const serving = await ctr.waitForLog('serving');
  const socket = join(socketHost, 'kms.sock');
  const st = await stat(socket);
  assert.ok(st.isSocket());
  assert.equal(st.mode & 0o777, 0o600);
  assert.equal(st.uid, 0);

  const endpoint = `unix://${socket}`;
  const v1 = createKmsV1Client({ endpoint, timeoutMs: 10_000 });
  const v2 = createKmsV2Client({ endpoint, timeoutMs: 10_000 });
  t.after(async () => {
    await v1.close();
    await v2.close();
  });
  const ready = await fetch(`http://${String(serving['health'])}/readyz`);
  assert.equal(ready.status, 200);

  const plain1 = randomBytes(32);
  const v1cipher = await v1.encrypt(plain1);
  assert.deepEqual(await v1.decrypt(v1cipher), plain1);
  const status1 = await v2.status();
  assert.equal(status1.healthz, 'ok');
  assert.equal(status1.keyID, serving['activeKeyID']);
  const enc1 = await v2.encrypt(plain1, newUID());
  assert.equal(enc1.keyID, status1.keyID);
  assert.deepEqual(await v2.decrypt({ ...enc1, uid: newUID() }), plain1);

  // Rotate on the "node" (through the image's own CLI), then SIGHUP the running plugin.
  const inodeBefore = (await stat(join(keyringHost, 'keyring.json'))).ino;
  await cli(keyringHost, 'keys', 'rotate', '--keyring', keyringFile);
  assert.notEqual((await stat(join(keyringHost, 'keyring.json'))).ino, inodeBefore,
    'keys rotate replaces the file: only a directory mount shows the new one');
  const seen = ctr.logCount();
  await podman('kill', '--signal', 'HUP', name);
  const reloaded = await ctr.waitForLog('reloaded keys', seen);
  assert.notEqual(reloaded['activeKeyID'], status1.keyID);

  const status2 = await v2.status();
  assert.equal(status2.keyID, reloaded['activeKeyID']);
  const plain2 = randomBytes(48);
  const enc2 = await v2.encrypt(plain2, newUID());
  assert.equal(enc2.keyID, status2.keyID);
  assert.deepEqual(await v2.decrypt({ ...enc2, uid: newUID() }), plain2);
  // Data written under the old key still reads.
  assert.deepEqual(await v2.decrypt({ ...enc1, uid: newUID() }), plain1);
  assert.deepEqual(await v1.decrypt(v1cipher), plain1);
  const v1cipher2 = await v1.encrypt(plain2);
  assert.deepEqual(await v1.decrypt(v1cipher2), plain2);

  await v1.close();
  await v2.close();
  await podman('kill', '--signal', 'TERM', name);
  assert.equal(await ctr.exited(), 0, ctr.output());
  await ctr.waitForLog('stopped');
  assert.equal(existsSync(socket), false, 'socket removed on SIGTERM');
});

test('--socket-group works with every capability dropped when the group is a supplementary group, and says why when not', SLOW, async (t) => {
  const GID = 4321;
  const root = await hostRoot(t);
  const pod = await manifest();
  // What the manifest's comments tell an operator with a non-root kube-apiserver to do.
  const c = pod.spec.containers[0];
  c.args.push(`--socket-group=${GID}`, '--socket-mode=0660');
  pod.spec.securityContext = { ...pod.spec.securityContext, supplementalGroups: [GID] };
  const name = `atrest-test-${process.pid}-${randomBytes(3).toString('hex')}`;
  const run = await podmanRunFromPod(pod, root, name);
  const keyringHost = run.hostPathOf.get(KEYRING_DIR)!;
  await (await import('node:fs/promises')).mkdir(keyringHost, { recursive: true, mode: 0o700 });
  const keyringFile = run.args.find((a) => a.startsWith('--keyring='))!.slice('--keyring='.length);
  await cli(keyringHost, 'keys', 'init', '--keyring', keyringFile);

  const ctr = startContainer([...run.podmanArgs, ...withAnyHealthPort(run.args)]);
  t.after(async () => {
    await podman('rm', '--force', '--ignore', name).catch(() => undefined);
  });
  await ctr.waitForLog('serving');
  const socket = join(run.hostPathOf.get(SOCKET_DIR)!, 'kms.sock');
  const st = await stat(socket);
  assert.equal(st.gid, GID);
  assert.equal(st.mode & 0o777, 0o660);
  await podman('kill', '--signal', 'TERM', name);
  assert.equal(await ctr.exited(), 0, ctr.output());

  // Without the supplementary group: refused with the fix in the message, nothing left behind.
  pod.spec.securityContext.supplementalGroups = [];
  const name2 = `${name}-nogroup`;
  const run2 = await podmanRunFromPod(pod, root, name2);
  const failed = startContainer([...run2.podmanArgs, ...withAnyHealthPort(run2.args)]);
  t.after(async () => {
    await podman('rm', '--force', '--ignore', name2).catch(() => undefined);
  });
  assert.notEqual(await failed.exited(), 0);
  assert.match(failed.output(), /not in that group and has no CAP_CHOWN/);
  assert.match(failed.output(), /supplementalGroups/);
  assert.equal(existsSync(socket), false);
});
