// Which providers handle a resource (exact, `*.<group>`, `*.*`, identity) and which resource an etcd key
// belongs to.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  groupResourceForEtcdKey,
  parseEncryptionConfiguration,
  parseGroupResource,
  providerType,
  resolveResource,
} from '../../src/config/index.js';

const K32 = Buffer.alloc(32, 3).toString('base64');
const config = parseEncryptionConfiguration(
  `apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets, deployments.apps]
    providers:
      - aesgcm: {keys: [{name: a, secret: "${K32}"}]}
  - resources: ['*.apps']
    providers:
      - secretbox: {keys: [{name: s, secret: "${K32}"}]}
  - resources: [secrets]
    providers:
      - aescbc: {keys: [{name: c, secret: "${K32}"}]}
  - resources: ['*.*']
    providers:
      - identity: {}
      - aescbc: {keys: [{name: c, secret: "${K32}"}]}
`,
  'x.yaml',
);
const onlyCore = parseEncryptionConfiguration(
  `apiVersion: v1
kind: EncryptionConfig
resources:
  - resources: ['*.']
    providers: [{identity: {}}]
`,
  'y.yaml',
);

describe('resolveResource', () => {
  it('uses the exact resource first, with providers of repeated entries concatenated in file order', () => {
    const r = resolveResource(config, { group: '', resource: 'secrets' });
    assert.equal(r.rule, 'secrets');
    assert.deepEqual(r.providers.map(providerType), ['aesgcm', 'aescbc']);
  });

  it('falls back to `*.<group>`, then `*.*`', () => {
    assert.equal(resolveResource(config, { group: 'apps', resource: 'deployments' }).rule, 'deployments.apps');
    assert.equal(resolveResource(config, { group: 'apps', resource: 'statefulsets' }).rule, '*.apps');
    const any = resolveResource(config, { group: 'batch', resource: 'jobs' });
    assert.equal(any.rule, '*.*');
    assert.deepEqual(any.providers.map(providerType), ['identity', 'aescbc']);
  });

  it('uses identity (which refuses encrypted data) when no rule matches', () => {
    const r = resolveResource(onlyCore, { group: 'apps', resource: 'deployments' });
    assert.equal(r.rule, null);
    assert.deepEqual(r.providers.map(providerType), ['identity']);
    assert.equal(resolveResource(onlyCore, { group: '', resource: 'configmaps' }).rule, '*.');
  });
});

describe('parseGroupResource', () => {
  it('splits at the first dot as Kubernetes does', () => {
    assert.deepEqual(parseGroupResource('secrets'), { group: '', resource: 'secrets' });
    assert.deepEqual(parseGroupResource('*.'), { group: '', resource: '*' });
    assert.deepEqual(parseGroupResource('*.*'), { group: '*', resource: '*' });
    assert.deepEqual(parseGroupResource('pandas.awesome.bears.example'), {
      group: 'awesome.bears.example',
      resource: 'pandas',
    });
  });
});

describe('groupResourceForEtcdKey', () => {
  it('maps core, renamed built-in, grouped built-in and custom resource keys', () => {
    const cases: [string, { group: string; resource: string } | undefined][] = [
      ['/registry/secrets/default/s1', { group: '', resource: 'secrets' }],
      ['/registry/configmaps/kube-system/c', { group: '', resource: 'configmaps' }],
      ['/registry/namespaces/default', { group: '', resource: 'namespaces' }],
      ['/registry/services/specs/default/kubernetes', { group: '', resource: 'services' }],
      ['/registry/services/endpoints/default/kubernetes', { group: '', resource: 'endpoints' }],
      ['/registry/minions/node-1', { group: '', resource: 'nodes' }],
      ['/registry/controllers/default/rc', { group: '', resource: 'replicationcontrollers' }],
      ['/registry/deployments/default/web', { group: 'apps', resource: 'deployments' }],
      ['/registry/ingress/default/web', { group: 'networking.k8s.io', resource: 'ingresses' }],
      ['/registry/clusterroles/admin', { group: 'rbac.authorization.k8s.io', resource: 'clusterroles' }],
      ['/registry/awesome.bears.example/pandas/ns/p1', { group: 'awesome.bears.example', resource: 'pandas' }],
      ['/registry/apiregistration.k8s.io/apiservices/v1.apps', { group: 'apiregistration.k8s.io', resource: 'apiservices' }],
      ['/registry/masterleases/10.0.0.1', undefined],
      ['/registry/services/specs', undefined],
      ['/other/secrets/default/s1', undefined],
      ['/registry/secrets', undefined],
    ];
    for (const [key, want] of cases) assert.deepEqual(groupResourceForEtcdKey(key), want, key);
  });

  it('honours a custom --etcd-prefix', () => {
    assert.deepEqual(groupResourceForEtcdKey('/k8s/secrets/ns/a', 'k8s'), { group: '', resource: 'secrets' });
    assert.equal(groupResourceForEtcdKey('/registry/secrets/ns/a', '/k8s/'), undefined);
  });
});
