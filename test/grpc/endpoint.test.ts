import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseUnixEndpoint } from '../../src/grpc/endpoint.js';
import { AtrestError } from '../../src/errors.js';

test('reads the socket path from the URL path, as kube-apiserver does', () => {
  assert.deepEqual(parseUnixEndpoint('unix:///var/run/kms.sock'), {
    path: '/var/run/kms.sock',
    abstract: false,
    address: '/var/run/kms.sock',
  });
  assert.equal(parseUnixEndpoint('unix:/tmp/a.sock').path, '/tmp/a.sock');
  assert.equal(parseUnixEndpoint('UNIX:///tmp/a.sock').path, '/tmp/a.sock');
  assert.equal(parseUnixEndpoint('unix:///tmp/my%20kms.sock?x=1#frag').path, '/tmp/my kms.sock');
});

test('treats unix://tmp/kms.sock like Go: host "tmp", path /kms.sock', () => {
  assert.equal(parseUnixEndpoint('unix://tmp/kms.sock').path, '/kms.sock');
});

test('maps unix:///@name to the Linux abstract socket @name', () => {
  assert.deepEqual(parseUnixEndpoint('unix:///@kms-provider'), {
    path: '@kms-provider',
    abstract: true,
    address: '\0kms-provider',
  });
});

test('refuses other schemes, relative and empty paths with ERR_SOCKET_ENDPOINT', () => {
  for (const bad of ['tcp://127.0.0.1:80', '/var/run/kms.sock', 'unix:kms.sock', 'unix://', 'unix:///', 'unix://host', 'unix:///@', 'unix:///a%zz', '']) {
    assert.throws(
      () => parseUnixEndpoint(bad),
      (err: unknown) => err instanceof AtrestError && err.code === 'ERR_SOCKET_ENDPOINT',
      bad,
    );
  }
});
