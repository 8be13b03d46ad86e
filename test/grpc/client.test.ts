// The client behaves like grpc-go with wait-for-ready (kube-apiserver's KMS client): it waits for a
// plugin that is not up yet, and re-dials after a plugin restart without being recreated.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { createGrpcClient } from '../../src/grpc/client.js';
import { createGrpcServer } from '../../src/grpc/server.js';
import { parseUnixEndpoint } from '../../src/grpc/endpoint.js';
import { GRPC_CODE, GrpcStatusError } from '../../src/grpc/status.js';
import { echo, listen, startFixture, tempDir } from './fixture.js';

const handlers = new Map([['/t.T/Echo', echo]]);

test('waits for a server that starts after the call was made (wait-for-ready)', async () => {
  const dir = tempDir();
  const address = join(dir, 'late.sock');
  const client = createGrpcClient({ address });
  const server = createGrpcServer({ handlers, maxMessageBytes: 1024 });
  let listener: Awaited<ReturnType<typeof listen>> | undefined;
  try {
    const call = client.unary('/t.T/Echo', Buffer.from('patience'), { timeoutMs: 5000 });
    await new Promise((r) => setTimeout(r, 300));
    listener = await listen(address, server);
    assert.deepEqual(await call, Buffer.from('patience'));
  } finally {
    await client.close();
    await server.close(0);
    listener?.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('gives up with DEADLINE_EXCEEDED when nothing ever listens', async () => {
  const dir = tempDir();
  const client = createGrpcClient({ address: join(dir, 'absent.sock') });
  try {
    const started = Date.now();
    await assert.rejects(client.unary('/t.T/Echo', Buffer.from('x'), { timeoutMs: 200 }), (err: unknown) => {
      assert.ok(err instanceof GrpcStatusError);
      assert.equal(err.code, GRPC_CODE.DEADLINE_EXCEEDED);
      assert.match(err.message, /ENOENT/);
      return true;
    });
    const took = Date.now() - started;
    assert.ok(took >= 190 && took < 2000, `took ${took} ms`);
  } finally {
    await client.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('recovers transparently from a server restart on the next call', async () => {
  const fx = await startFixture({ handlers, maxMessageBytes: 1024 });
  const client = createGrpcClient({ address: fx.address });
  try {
    assert.deepEqual(await client.unary('/t.T/Echo', Buffer.from('one'), { timeoutMs: 2000 }), Buffer.from('one'));
    await fx.stop(0);
    await fx.restart();
    assert.deepEqual(await client.unary('/t.T/Echo', Buffer.from('two'), { timeoutMs: 2000 }), Buffer.from('two'));
    // And across a gap in which the socket is absent.
    await fx.stop(0);
    const later = client.unary('/t.T/Echo', Buffer.from('three'), { timeoutMs: 5000 });
    await new Promise((r) => setTimeout(r, 200));
    await fx.restart();
    assert.deepEqual(await later, Buffer.from('three'));
  } finally {
    await client.close();
    await fx.cleanup();
  }
});

test('serves and dials a Linux abstract socket (unix:///@name) from Node (Go cannot reach a Node abstract socket: see docs/grpc.md)', async () => {
  const endpoint = parseUnixEndpoint(`unix:///@atrest-test-${randomBytes(6).toString('hex')}`);
  const fx = await startFixture({ handlers, maxMessageBytes: 1024 }, endpoint.address);
  const client = createGrpcClient({ address: endpoint.address });
  try {
    assert.deepEqual(await client.unary('/t.T/Echo', Buffer.from('abstract'), { timeoutMs: 2000 }), Buffer.from('abstract'));
  } finally {
    await client.close();
    await fx.cleanup();
  }
});

test('sends the configured :authority and refuses a response over its limit', async () => {
  let seen = '';
  const fx = await startFixture({
    maxMessageBytes: 1 << 20,
    handlers: new Map([
      [
        '/t.T/Big',
        async (call) => {
          seen = call.authority;
          return Buffer.alloc(2048);
        },
      ],
    ]),
  });
  const client = createGrpcClient({ address: fx.address, authority: '%2Fvar%2Frun%2Fkms.sock', maxMessageBytes: 1024 });
  try {
    await assert.rejects(client.unary('/t.T/Big', Buffer.from('x'), { timeoutMs: 2000 }), (err: unknown) => {
      assert.ok(err instanceof GrpcStatusError);
      assert.equal(err.code, GRPC_CODE.RESOURCE_EXHAUSTED);
      return true;
    });
    assert.equal(seen, '/var/run/kms.sock');
  } finally {
    await client.close();
    await fx.cleanup();
  }
});

test('serves many concurrent calls on one connection', async () => {
  const fx = await startFixture({ handlers, maxMessageBytes: 1024 });
  const client = createGrpcClient({ address: fx.address });
  try {
    const outs = await Promise.all(
      Array.from({ length: 200 }, (_, i) => client.unary('/t.T/Echo', Buffer.from(`m${i}`), { timeoutMs: 5000 })),
    );
    outs.forEach((o, i) => assert.equal(o.toString(), `m${i}`));
  } finally {
    await client.close();
    await fx.cleanup();
  }
});
