// The deploy/ examples stay consistent with the plugin: they parse, use the documented socket and
// health port, keep the hardening the docs promise, and the KMS v1 example is the 1.11 form.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { parse } from 'yaml';
import { DEFAULT_HEALTH_LISTEN } from '../../src/health/server.js';
import { encryptionConfigV1, encryptionConfigV2 } from '../../src/cli/dev.js';

const SOCKET_DIR = '/var/run/atrest';
const ENDPOINT = `unix://${SOCKET_DIR}/kms.sock`;
const HEALTH_PORT = Number(DEFAULT_HEALTH_LISTEN.split(':')[1]);

async function yamlFile(path: string): Promise<any> {
  return parse(await readFile(path, 'utf8'));
}

test('the static Pod shares the socket directory, probes /livez and /readyz, and is locked down', async () => {
  const pod = await yamlFile('deploy/kubernetes/atrest-kms-plugin.yaml');
  assert.equal(pod.kind, 'Pod');
  const c = pod.spec.containers[0];
  assert.ok(c.args.includes(`--listen=${ENDPOINT}`));
  assert.ok(c.args.includes(`--health-listen=${DEFAULT_HEALTH_LISTEN}`));
  assert.equal(c.livenessProbe.httpGet.path, '/livez');
  assert.equal(c.readinessProbe.httpGet.path, '/readyz');
  assert.equal(c.livenessProbe.httpGet.port, HEALTH_PORT);
  assert.equal(c.securityContext.readOnlyRootFilesystem, true);
  assert.deepEqual(c.securityContext.capabilities.drop, ['ALL']);
  assert.equal(c.securityContext.capabilities.add, undefined);
  assert.ok(c.resources.requests.cpu && c.resources.requests.memory);
  const socketVolume = pod.spec.volumes.find((v: any) => v.name === 'socket-dir');
  assert.equal(socketVolume.hostPath.path, SOCKET_DIR);
  // A directory: `keys rotate` renames a new file over the keyring, which a file mount never shows.
  const keyring = pod.spec.volumes.find((v: any) => v.name === 'keyring-dir');
  assert.equal(keyring.hostPath.type, 'Directory');
  const keyringArg = c.args.find((a: string) => a.startsWith('--keyring='));
  const mount = c.volumeMounts.find((m: any) => m.name === 'keyring-dir');
  assert.ok(keyringArg.startsWith(`--keyring=${mount.mountPath}/`));
  assert.equal(mount.readOnly, true);
  assert.equal(pod.spec.hostNetwork, true);
});

test('the systemd unit starts before kubelet and kube-apiserver and reloads with SIGHUP', async () => {
  const unit = await readFile('deploy/systemd/atrest.service', 'utf8');
  assert.match(unit, /^Before=.*kubelet\.service.*kube-apiserver\.service/m);
  assert.match(unit, /^ExecReload=\/bin\/kill -HUP \$MAINPID$/m);
  assert.ok(unit.includes(`--listen=${ENDPOINT}`));
});

test('the KMS v1 example is the Kubernetes 1.11 EncryptionConfig form', async () => {
  const doc = await yamlFile('deploy/encryption-config/kms-v1-legacy.yaml');
  assert.equal(doc.apiVersion, 'v1');
  assert.equal(doc.kind, 'EncryptionConfig');
  const kms = doc.resources[0].providers[0].kms;
  assert.deepEqual(Object.keys(kms).sort(), ['cachesize', 'endpoint', 'name']);
  assert.equal(kms.endpoint, ENDPOINT);
  assert.deepEqual(doc.resources[0].providers[1], { identity: {} });
});

test('the KMS v2 and v1 examples match what serve --dev prints, apart from the endpoint', async () => {
  assert.deepEqual(
    await yamlFile('deploy/encryption-config/kms-v2.yaml'),
    parse(encryptionConfigV2(ENDPOINT)),
  );
  assert.deepEqual(
    await yamlFile('deploy/encryption-config/kms-v1.yaml'),
    parse(encryptionConfigV1(ENDPOINT)),
  );
});
