// Break-glass recovery end to end: Secrets written by a real kube-apiserver through `atrest serve`
// with KMS v1 and v2, on the AWS KMS emulator (moto) and on SoftHSM2, every wrap sealed to an offline
// recovery key. Then an etcd snapshot, then both keys destroyed (the key gone from the KMS emulator,
// the token object deleted in the HSM): the API server can no longer read the Secrets, while
// `atrest decrypt --snapshot … --recovery-key …` (or 2 of 3 shares) returns every one byte for byte.
// Values written before sealing was on are reported, a tampered seal is detected.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CreateAliasCommand, CreateKeyCommand, DescribeKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { startControlPlane, type ControlPlane } from '../api/control-plane.js';
import { answersHttp, findTool, freePort, startServer, type RunningServer } from '../backends/servers.js';
import { createSoftHsmToken, type SoftHsmToken } from '../backends/softhsm.js';
import { waitFor } from '../backends/suite.js';
import { runCli, spawnCli, type ServeProcess } from '../kms/helpers.js';
import { createKmsV2Client } from '../../src/kms-client/index.js';

process.env['AWS_ACCESS_KEY_ID'] = 'atrest-test';
process.env['AWS_SECRET_ACCESS_KEY'] = 'atrest-test-secret';
process.env['AWS_REGION'] = 'us-east-1';
delete process.env['AWS_PROFILE'];

const HSM_LABEL = 'atrest-kek';
/** Secrets written per (backend, KMS version). */
const PER_GROUP = 8;
const GROUPS = ['aws-v1', 'hsm-v1', 'aws-v2', 'hsm-v2'] as const;
type Group = (typeof GROUPS)[number];

interface Plugin {
  readonly name: 'aws' | 'hsm';
  readonly socket: string;
  process?: ServeProcess;
}

describe('break-glass recovery with kube-apiserver, KMS v1 and v2, AWS KMS and PKCS#11', () => {
  const cleanups: (() => unknown)[] = [];
  const t = { after: (fn: () => unknown) => void cleanups.push(fn) };
  let cp: ControlPlane;
  let moto: RunningServer;
  let motoPort: number;
  const startMoto = (port: number): Promise<RunningServer> =>
    startServer(findTool('moto_server', '30-moto.sh'), ['-H', '127.0.0.1', '-p', String(port)], () =>
      answersHttp(`http://127.0.0.1:${port}/moto-api/`),
    );
  let admin: KMSClient;
  let awsKeyArn: string;
  let token: SoftHsmToken;
  let dir: string;
  const plugins: Record<'aws' | 'hsm', Plugin> = {
    aws: { name: 'aws', socket: '' },
    hsm: { name: 'hsm', socket: '' },
  };
  /** namespace/name -> data as written */
  const written = new Map<string, Record<string, string>>();
  const paths = { pub: '', priv: '', share: '', snapshot: '', configs: {} as Record<Group, string> };

  async function startPlugin(p: Plugin, recovery: boolean): Promise<void> {
    await stopPlugin(p);
    const backend = p.name === 'aws' ? 'aws-kms' : 'pkcs11';
    p.process = spawnCli(t, [
      'serve',
      '--listen', `unix://${p.socket}`,
      '--backend', backend,
      '--backend-config', join(dir, `${p.name}.yaml`),
      '--health-listen', 'off',
      '--self-test-interval', '1',
      ...(recovery ? ['--recovery-public-key', paths.pub] : []),
    ]);
    await p.process.waitForLog('serving', 30_000);
  }

  async function stopPlugin(p: Plugin): Promise<void> {
    const child = p.process?.child;
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    await p.process!.exited();
  }

  function pluginStates(): string {
    return Object.values(plugins)
      .map((p) => `${p.name}: ${p.process?.child.exitCode === null && p.process.child.signalCode === null ? 'running' : `exited ${p.process?.child.exitCode ?? p.process?.child.signalCode}; stderr: ${p.process?.stderr().slice(-600)}`}`)
      .join('; ');
  }

  async function healthy(p: Plugin): Promise<boolean> {
    const c = createKmsV2Client({ endpoint: `unix://${p.socket}`, timeoutMs: 5_000 });
    try {
      return (await c.status()).healthz === 'ok';
    } catch {
      return false;
    } finally {
      await c.close();
    }
  }

  /** The config whose first provider writes `group`; all four (and identity) read. */
  function encryptionConfig(first: Group): string {
    const stanza = (g: Group): string[] => {
      const [backend, version] = g.split('-') as ['aws' | 'hsm', 'v1' | 'v2'];
      return [
        '      - kms:',
        ...(version === 'v2' ? ['          apiVersion: v2'] : ['          cachesize: 100']),
        `          name: ${g}`,
        `          endpoint: unix://${plugins[backend].socket}`,
        '          timeout: 5s',
      ];
    };
    return [
      'apiVersion: apiserver.config.k8s.io/v1',
      'kind: EncryptionConfiguration',
      'resources:',
      '  - resources: [secrets]',
      '    providers:',
      ...[first, ...GROUPS.filter((g) => g !== first)].flatMap(stanza),
      '      - identity: {}',
      '',
    ].join('\n');
  }

  async function createSecrets(namespace: string, names: readonly string[]): Promise<void> {
    cp.kubectl(['create', 'namespace', namespace]);
    for (const name of names) {
      const data = { password: randomBytes(24).toString('base64'), binary: randomBytes(40).toString('base64') };
      const manifest = JSON.stringify({ apiVersion: 'v1', kind: 'Secret', metadata: { name, namespace }, data });
      // The API server reconnects to a restarted plugin on its own; wait for that, not for a time.
      await waitFor(`secret ${namespace}/${name} to be created (${pluginStates()})`, async () => {
        try {
          cp.kubectl(['create', '-f', '-'], manifest);
          return true;
        } catch {
          return false;
        }
      }, 60_000);
      written.set(`${namespace}/${name}`, data);
    }
  }

  const names = (prefix: string, n: number): string[] => Array.from({ length: n }, (_, i) => `${prefix}-${i}`);
  const etcdFlags = (): string[] => ['--endpoints', cp.etcdUrl];

  before(async () => {
    cp = await startControlPlane();
    dir = cp.dir;
    plugins.aws = { name: 'aws', socket: join(dir, 'aws.sock') };
    plugins.hsm = { name: 'hsm', socket: join(dir, 'hsm.sock') };
    const port = await freePort();
    motoPort = port;
    moto = await startMoto(port);
    admin = new KMSClient({ endpoint: `http://127.0.0.1:${port}`, region: 'us-east-1' });
    awsKeyArn = (await admin.send(new CreateKeyCommand({ Description: 'atrest break-glass test' }))).KeyMetadata!.Arn!;
    await admin.send(new CreateAliasCommand({ AliasName: 'alias/atrest-break-glass', TargetKeyId: awsKeyArn }));
    await writeFile(
      join(dir, 'aws.yaml'),
      `aws-kms:\n  keyId: alias/atrest-break-glass\n  endpoint: http://127.0.0.1:${port}\n  region: us-east-1\n  refreshInterval: 300ms\n  timeout: 2s\n`,
    );
    token = createSoftHsmToken();
    token.generateKey(HSM_LABEL);
    await writeFile(
      join(dir, 'hsm.yaml'),
      `pkcs11:\n  module: ${token.module}\n  tokenLabel: ${token.tokenLabel}\n  keyLabel: ${HSM_LABEL}\n  pinFile: ${token.pinFile}\n  refreshInterval: 300ms\n`,
    );
    paths.pub = join(dir, 'recovery.pub.pem');
    paths.priv = join(dir, 'recovery.key.pem');
    paths.share = join(dir, 'share');
    paths.snapshot = join(dir, 'backup.db');
    for (const g of GROUPS) {
      paths.configs[g] = join(dir, `enc-${g}.yaml`);
      await writeFile(paths.configs[g], encryptionConfig(g));
    }
  });

  after(async () => {
    for (const fn of cleanups.reverse()) await fn();
    await stopPlugin(plugins.aws);
    await stopPlugin(plugins.hsm);
    admin?.destroy();
    await moto?.stop();
    token?.remove();
    await cp?.stop();
  });

  it('makes a recovery key with 2-of-3 shares; the private key file is 0600', async () => {
    const r = await runCli(t, [
      'recovery', 'init', '--public-out', paths.pub, '--private-out', paths.priv,
      '--shares', '3', '--threshold', '2', '--share-out', paths.share,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /recovery key [0-9a-f]{16}/);
    const { statSync } = await import('node:fs');
    assert.equal(statSync(paths.priv).mode & 0o777, 0o600);
    assert.equal(statSync(`${paths.share}-2.txt`).mode & 0o777, 0o600);
    assert.doesNotMatch(r.stdout, /PRIVATE KEY/);
  });

  it('writes Secrets through kube-apiserver: 2 before sealing, then KMS v1 and v2 on both backends', async () => {
    await startPlugin(plugins.aws, false);
    await startPlugin(plugins.hsm, false);
    await waitFor('both plugins healthy', async () => (await healthy(plugins.aws)) && (await healthy(plugins.hsm)), 30_000);
    await cp.restartApiserver(paths.configs['aws-v1'], { extraArgs: ['--feature-gates=KMSv1=true'] });
    await createSecrets('unsealed', names('before-recovery', 2));

    await startPlugin(plugins.aws, true);
    await startPlugin(plugins.hsm, true);
    await waitFor('both plugins healthy', async () => (await healthy(plugins.aws)) && (await healthy(plugins.hsm)), 30_000);
    for (const g of GROUPS) {
      if (g !== 'aws-v1') await cp.restartApiserver(paths.configs[g], { extraArgs: ['--feature-gates=KMSv1=true'] });
      await createSecrets(g, names('s', PER_GROUP));
    }
    // Each group really was written by its provider.
    const stored = JSON.parse(cp.etcdctl(['get', '--prefix', '/registry/secrets/', '-w', 'json'])) as { kvs: { key: string; value: string }[] };
    for (const g of GROUPS) {
      const values = stored.kvs.filter((kv) => Buffer.from(kv.key, 'base64').toString().startsWith(`/registry/secrets/${g}/s-`));
      assert.equal(values.length, PER_GROUP);
      for (const kv of values) {
        assert.ok(Buffer.from(kv.value, 'base64').toString('latin1').startsWith(`k8s:enc:kms:${g.slice(-2)}:${g}:`));
      }
    }
  });

  it('scan reports how many kms values carry a recovery seal', async () => {
    const r = await runCli(t, ['scan', '--encryption-config', paths.configs['aws-v2'], ...etcdFlags(), '--resource', 'secrets', '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    const totals = (JSON.parse(r.stdout) as { totals: { kms: number; recoverySealed: number } }).totals;
    assert.equal(totals.kms, GROUPS.length * PER_GROUP + 2);
    assert.equal(totals.recoverySealed, GROUPS.length * PER_GROUP);
    const table = await runCli(t, ['scan', '--encryption-config', paths.configs['aws-v2'], ...etcdFlags(), '--resource', 'secrets']);
    assert.match(table.stdout, new RegExp(`recovery seals: ${GROUPS.length * PER_GROUP} of ${GROUPS.length * PER_GROUP + 2} kms value`));
  });

  it('after the snapshot both keys are destroyed and the API server cannot read the Secrets', async () => {
    cp.etcdctl(['snapshot', 'save', paths.snapshot]);
    // moto 5.2.1 accepts ScheduleKeyDeletion but still decrypts with a key pending deletion, so the AWS
    // key is destroyed the only way the emulator allows: a fresh moto on the same port that never had it.
    await moto.stop();
    moto = await startMoto(motoPort);
    await assert.rejects(admin.send(new DescribeKeyCommand({ KeyId: awsKeyArn })), /NotFound|does not exist/);
    assert.equal(token.destroyKey(HSM_LABEL), 1);
    // Fresh plugins and API server: nothing cached in memory any more.
    await startPlugin(plugins.aws, true);
    await startPlugin(plugins.hsm, true);
    await cp.restartApiserver(paths.configs['aws-v2'], {
      extraArgs: ['--feature-gates=KMSv1=true'],
      until: 'serving',
    });
    assert.equal(await healthy(plugins.aws), false, 'aws plugin cannot work without its key');
    assert.equal(await healthy(plugins.hsm), false, 'hsm plugin cannot work without its key');
    for (const g of GROUPS) {
      assert.throws(() => cp.kubectl(['get', 'secret', '-n', g, 's-0', '-o', 'json']), /./, `${g} still readable`);
    }
    await stopPlugin(plugins.aws);
    await stopPlugin(plugins.hsm);
  });

  const decryptFromSnapshot = (extra: string[]) =>
    runCli(t, [
      'decrypt', '--encryption-config', paths.configs['aws-v2'], '--snapshot', paths.snapshot,
      '--all', '--resource', 'secrets', '-o', 'json', '--show-secret-data', ...extra,
    ]);

  function assertEveryWrittenSecret(stdout: string): void {
    const records = JSON.parse(stdout) as { key: string; error?: string; object?: { data?: Record<string, string> } }[];
    const byKey = new Map(records.map((r) => [r.key, r]));
    for (const [nsName, data] of written) {
      const r = byKey.get(`/registry/secrets/${nsName}`);
      assert.ok(r, `${nsName} is in the output`);
      if (nsName.startsWith('unsealed/')) {
        assert.match(r.error ?? '', /no recovery seal/, `${nsName} is reported as unsealed`);
        continue;
      }
      assert.deepEqual(r.object?.data, data, `${nsName} byte for byte`);
    }
  }

  it('decrypt --snapshot --recovery-key returns every sealed Secret byte for byte, and reports the unsealed ones', async () => {
    const r = await decryptFromSnapshot(['--recovery-key', paths.priv]);
    assert.equal(r.code, 3, 'unsealed values make the exit status 3');
    assertEveryWrittenSecret(r.stdout);
    assert.match(r.stderr, /unsealed\/before-recovery-0.*no recovery seal/);
    assert.doesNotMatch(r.stderr, /PRIVATE KEY/);
  });

  it('any 2 of the 3 shares do the same; 1 share is refused', async () => {
    const r = await decryptFromSnapshot(['--recovery-shares', `${paths.share}-1.txt,${paths.share}-3.txt`]);
    assert.equal(r.code, 3, r.stderr);
    assertEveryWrittenSecret(r.stdout);
    const one = await decryptFromSnapshot(['--recovery-shares', `${paths.share}-2.txt`]);
    assert.equal(one.code, 1);
    assert.equal(one.stdout, '');
    assert.match(one.stderr, /needs 2 shares; 1 given/);
  });

  it('a tampered recovery seal is detected (kms v1 container and kms v2 annotation)', async () => {
    for (const g of ['hsm-v1', 'aws-v2'] as const) {
      const key = `/registry/secrets/${g}/s-1`;
      const kv = (JSON.parse(cp.etcdctl(['get', key, '-w', 'json'])) as { kvs: { value: string }[] }).kvs[0]!;
      const value = Buffer.from(kv.value, 'base64');
      const sealAt = value.lastIndexOf(Buffer.from('ATS\x01', 'latin1'));
      assert.ok(sealAt > 0, `${g} value carries a seal`);
      value[sealAt + 60]! ^= 0x01;
      const file = join(dir, `${g}.tampered`);
      await writeFile(file, value);
      const r = await runCli(t, [
        'decrypt', '--encryption-config', paths.configs['aws-v2'], '--etcd-key', key, '--value-file', file,
        '--recovery-key', paths.priv, '-o', 'json',
      ]);
      assert.equal(r.code, 3, `${g}: ${r.stderr}`);
      assert.match(r.stderr, /decryption failed/);
      assert.equal(r.stdout, '');
      assert.ok((await readFile(file)).length > 0);
    }
  });
});
