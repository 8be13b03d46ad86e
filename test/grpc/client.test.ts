// The client behaves like grpc-go with wait-for-ready (kube-apiserver's KMS client): it waits for a
// plugin that is not up yet, and re-dials after a plugin restart without being recreated.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { createGrpcClient, type GrpcClientClock } from '../../src/grpc/client.js';
import { createGrpcServer } from '../../src/grpc/server.js';
import { parseUnixEndpoint } from '../../src/grpc/endpoint.js';
import { GRPC_CODE, GrpcStatusError } from '../../src/grpc/status.js';
import { echo, listen, startFixture, tempDir } from './fixture.js';

const handlers = new Map([['/t.T/Echo', echo]]);

/** Real time, with a hook run when the client starts a dial backoff (it found no server). */
function backoffHook(): GrpcClientClock & { onBackoff: (() => Promise<void>) | undefined } {
  const hooked = {
    onBackoff: undefined as (() => Promise<void>) | undefined,
    now: () => Date.now(),
    async sleep(ms: number) {
      const hook = hooked.onBackoff;
      hooked.onBackoff = undefined;
      await hook?.();
      await new Promise((r) => setTimeout(r, ms));
    },
  };
  return hooked;
}

test('waits for a server that starts after the call was made (wait-for-ready)', async () => {
  const dir = tempDir();
  const address = join(dir, 'late.sock');
  const clock = backoffHook();
  const client = createGrpcClient({ address, clock });
  const server = createGrpcServer({ handlers, maxMessageBytes: 1024 });
  let listener: Awaited<ReturnType<typeof listen>> | undefined;
  try {
    // The server starts only once the client has failed to dial and backs off.
    let dialFailed = false;
    clock.onBackoff = async () => {
      dialFailed = true;
      listener = await listen(address, server);
    };
    const call = client.unary('/t.T/Echo', Buffer.from('patience'), { timeoutMs: 30_000 });
    assert.deepEqual(await call, Buffer.from('patience'));
    assert.ok(dialFailed);
  } finally {
    await client.close();
    await server.close(0);
    listener?.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('gives up with DEADLINE_EXCEEDED when nothing ever listens', async () => {
  const dir = tempDir();
  // A fake clock: each backoff advances time by exactly what the client asked to wait.
  let t = 0;
  const slept: number[] = [];
  const clock: GrpcClientClock = {
    now: () => t,
    sleep: async (ms) => {
      slept.push(ms);
      t += ms;
    },
  };
  const client = createGrpcClient({ address: join(dir, 'absent.sock'), clock });
  try {
    await assert.rejects(client.unary('/t.T/Echo', Buffer.from('x'), { timeoutMs: 200 }), (err: unknown) => {
      assert.ok(err instanceof GrpcStatusError);
      assert.equal(err.code, GRPC_CODE.DEADLINE_EXCEEDED);
      assert.match(err.message, /ENOENT/);
      return true;
    });
    // Exponential backoff from 10 ms, the last wait cut to the deadline, and no wait beyond it.
    assert.deepEqual(slept, [10, 20, 40, 80, 50]);
    assert.equal(t, 200);
  } finally {
    await client.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('recovers transparently from a server restart on the next call', async () => {
  const fx = await startFixture({ handlers, maxMessageBytes: 1024 });
  const clock = backoffHook();
  const client = createGrpcClient({ address: fx.address, clock });
  try {
    assert.deepEqual(await client.unary('/t.T/Echo', Buffer.from('one'), { timeoutMs: 2000 }), Buffer.from('one'));
    await fx.stop(0);
    await fx.restart();
    assert.deepEqual(await client.unary('/t.T/Echo', Buffer.from('two'), { timeoutMs: 2000 }), Buffer.from('two'));
    // And across a gap in which the socket is absent.
    await fx.stop(0);
    // The server comes back only once the client has found it gone and backs off.
    clock.onBackoff = () => fx.restart();
    const later = client.unary('/t.T/Echo', Buffer.from('three'), { timeoutMs: 30_000 });
    assert.deepEqual(await later, Buffer.from('three'));
    assert.equal(clock.onBackoff, undefined, 'the client did back off');
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
