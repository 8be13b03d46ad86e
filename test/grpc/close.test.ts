// close(grace): in-flight calls finish, new ones are refused, stuck ones are cut at the grace bound.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createGrpcClient } from '../../src/grpc/client.js';
import { GRPC_CODE, GrpcStatusError } from '../../src/grpc/status.js';
import { startFixture } from './fixture.js';
import type { UnaryCall } from '../../src/grpc/server.js';

let markStarted: () => void = () => {};
/** Resolves once the next handler has started running (the call is truly in flight). */
function nextStart(): Promise<void> {
  return new Promise((resolve) => {
    markStarted = resolve;
  });
}
const slow = (ms: number) => async (call: UnaryCall) => {
  markStarted();
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    call.signal.addEventListener('abort', () => {
      clearTimeout(timer);
      resolve();
    });
  });
  return call.message;
};

test('close(grace) lets an in-flight call finish', async () => {
  const fx = await startFixture({ maxMessageBytes: 1024, handlers: new Map([['/t.T/Slow', slow(200)]]) });
  const client = createGrpcClient({ address: fx.address });
  try {
    const started0 = nextStart();
    const inflight = client.unary('/t.T/Slow', Buffer.from('done'), { timeoutMs: 5000 });
    await started0;
    const started = Date.now();
    await fx.stop(5000);
    assert.deepEqual(await inflight, Buffer.from('done'));
    assert.ok(Date.now() - started < 4000, 'close returned once the call finished, not at the grace bound');
  } finally {
    await client.close();
    await fx.cleanup();
  }
});

test('close(grace) cuts a stuck call at the grace bound', async () => {
  const fx = await startFixture({ maxMessageBytes: 1024, handlers: new Map([['/t.T/Stuck', slow(60_000)]]) });
  const client = createGrpcClient({ address: fx.address });
  try {
    const started0 = nextStart();
    const inflight = client.unary('/t.T/Stuck', Buffer.from('x'), { timeoutMs: 5000 });
    const outcome = inflight.then(
      () => undefined,
      (err: unknown) => err,
    );
    await started0;
    const started = Date.now();
    await fx.server.close(100);
    const took = Date.now() - started;
    assert.ok(took >= 90 && took < 2000, `close took ${took} ms`);
    // The stream was destroyed with its session, not left to run into the client's deadline.
    const failedAt = Date.now();
    const err = await outcome;
    assert.ok(err instanceof GrpcStatusError && err.code !== GRPC_CODE.OK, String(err));
    assert.ok(Date.now() - failedAt < 4000);
  } finally {
    await client.close();
    await fx.cleanup();
  }
});
