import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeStoredObject, REDACTED } from '../../src/etcd/k8s-object.js';

// Recorded with the real Kubernetes protobuf serializer (k8s.io/apimachinery v0.37.2
// runtime/serializer/protobuf over k8s.io/api v0.37.2 core/v1 and apps/v1), the encoding kube-apiserver
// stores in etcd: "k8s\0" + runtime.Unknown. Secret: name db-password, namespace prod, labels app=db,
// tier=backend, annotation owner=team-a, data password=hunter2 user=admin, type Opaque, created
// 2026-01-01T00:00:00Z. ConfigMap: data mode=fast level=3, binaryData blob=00 01 02 ff.
// Deployment apps/v1 web, generation 3.
const SECRET_PB = Buffer.from('6b3873000a0c0a027631120653656372657412a6010a780a0b64622d70617373776f726412001a0470726f6422002a2436663163326139652d306434622d346331652d396135372d3362326438663065316334323200380042080880f2d6ca0610005a090a03617070120264625a0f0a047469657212076261636b656e64620f0a056f776e657212067465616d2d6112130a0870617373776f7264120768756e74657232120d0a0475736572120561646d696e1a064f70617175651a002200', 'hex');
const CONFIGMAP_PB = Buffer.from('6b3873000a0f0a0276311209436f6e6669674d617012750a4b0a0873657474696e677312001a0764656661756c7422002a2431313131313131312d323232322d333333332d343434342d3535353535353535353535353200380042080880f2d6ca061000120a0a056c6576656c120133120c0a046d6f64651204666173741a0c0a04626c6f621204000102ff1a002200', 'hex');
const DEPLOYMENT_PB = Buffer.from('6b3873000a150a07617070732f7631120a4465706c6f796d656e74126e0a220a0377656212001a0764656661756c7422002a003200380342080880f2d6ca061000123a1a300a100a0012001a0022002a00320038004200121c1a00320042004a0052005800600068008201008a01009a0100c2010022020a00280038001a0c0800100018002000280038001a002200', 'hex');

describe('Kubernetes storage encoding decoder', () => {
  test('decodes a protobuf Secret with its data redacted by default', () => {
    const { encoding, object } = decodeStoredObject(SECRET_PB);
    assert.equal(encoding, 'protobuf');
    assert.deepEqual(object, {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: {
        name: 'db-password',
        namespace: 'prod',
        uid: '6f1c2a9e-0d4b-4c1e-9a57-3b2d8f0e1c42',
        creationTimestamp: '2026-01-01T00:00:00Z',
        labels: { app: 'db', tier: 'backend' },
        annotations: { owner: 'team-a' },
      },
      data: { password: REDACTED, user: REDACTED },
      type: 'Opaque',
    });
    assert.equal(JSON.stringify(object).includes('hunter2'), false);
    assert.equal(JSON.stringify(object).includes(Buffer.from('hunter2').toString('base64')), false);
  });

  test('shows Secret data base64-encoded, as kubectl does, when asked', () => {
    const { object } = decodeStoredObject(SECRET_PB, { showSecretData: true });
    assert.deepEqual(object.data, {
      password: Buffer.from('hunter2').toString('base64'),
      user: Buffer.from('admin').toString('base64'),
    });
  });

  test('decodes a protobuf ConfigMap with data and binaryData', () => {
    const { object } = decodeStoredObject(CONFIGMAP_PB);
    assert.deepEqual(object, {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: {
        name: 'settings',
        namespace: 'default',
        uid: '11111111-2222-3333-4444-555555555555',
        creationTimestamp: '2026-01-01T00:00:00Z',
      },
      data: { level: '3', mode: 'fast' },
      binaryData: { blob: 'AAEC/w==' },
    });
  });

  test('shows kind, apiVersion, metadata and size for other kinds', () => {
    const { object } = decodeStoredObject(DEPLOYMENT_PB);
    assert.equal(object.kind, 'Deployment');
    assert.equal(object.apiVersion, 'apps/v1');
    assert.deepEqual(object.metadata, {
      name: 'web',
      namespace: 'default',
      generation: 3,
      creationTimestamp: '2026-01-01T00:00:00Z',
    });
    assert.equal(typeof object.rawSize, 'number');
    assert.ok((object.rawSize as number) > 0);
  });

  test('decodes JSON objects and redacts JSON Secrets', () => {
    const secret = Buffer.from(JSON.stringify({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'x' }, data: { k: 'c2VjcmV0' }, stringData: { s: 'plain' } }));
    const { encoding, object } = decodeStoredObject(secret);
    assert.equal(encoding, 'json');
    assert.deepEqual(object.data, { k: REDACTED });
    assert.deepEqual(object.stringData, { s: REDACTED });
    const cr = decodeStoredObject(Buffer.from('{"apiVersion":"example.com/v1","kind":"Widget","spec":{"size":2}}'));
    assert.deepEqual(cr.object, { apiVersion: 'example.com/v1', kind: 'Widget', spec: { size: 2 } });
  });

  test('rejects a truncated protobuf object with a format error instead of garbage', () => {
    assert.throws(() => decodeStoredObject(SECRET_PB.subarray(0, 40)), (err: Error & { code?: string }) => err.code === 'ERR_PROTO_MALFORMED');
  });

  test('reports only the size of bytes that are neither protobuf nor JSON', () => {
    assert.deepEqual(decodeStoredObject(Buffer.from([1, 2, 3])), { encoding: 'unknown', object: { rawSize: 3 } });
  });
});
